"""create_app(settings): the one assembly point. No module-level app, no globals."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from ki2api import __version__
from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.tokenizer import default_counter
from ki2api.frontends.anthropic.error_json import error_response as anthropic_error_response
from ki2api.frontends.openai.error_json import error_response
from ki2api.kiro.transport import ChatTransport
from ki2api.server.accounting import trace_of
from ki2api.server.allocator import limit_arenas
from ki2api.server.console import console_accounts, console_api, console_pages
from ki2api.server.front_door import FrontDoor
from ki2api.server.hosts import is_loopback_host
from ki2api.server.routes_anthropic import create_message
from ki2api.server.routes_anthropic import router as anthropic_router
from ki2api.server.routes_metrics import router as metrics_router
from ki2api.server.routes_openai import chat_completions
from ki2api.server.routes_openai import router as openai_router
from ki2api.server.routes_responses import router as responses_router
from ki2api.server.routes_shared import router as shared_router
from ki2api.server.services import build_services
from ki2api.settings import Settings, load_settings
from ki2api.state.base import StateStore
from ki2api.state.store_status import StoreAway
from ki2api.state.usage_log import UsageLog

__all__ = [
    "GatewayApp",
    "create_app",
    "route_exception_response",
    "create_app_from_env",
    "is_anthropic_path",
    "render_error",
]

log = logging.getLogger("ki2api.server")


def is_anthropic_path(path: str) -> bool:
    """Paths answered in the Anthropic dialect (errors included)."""
    return path == "/v1/messages" or path.startswith(("/v1/messages/", "/api/"))


def _speaks_anthropic(scope: Scope) -> bool:
    """Anthropic paths, and the shared ones (/v1/models) when the client is Anthropic's: it
    sends `anthropic-version` or authenticates with `x-api-key` (OpenAI clients use Bearer)."""
    path = str(scope.get("path", ""))
    if is_anthropic_path(path):
        return True
    if not path.startswith("/v1/models"):
        return False
    headers = dict(scope.get("headers") or [])
    return b"anthropic-version" in headers or (
        b"x-api-key" in headers and b"authorization" not in headers
    )


def render_error(err: GatewayError, scope: Scope | None = None) -> Response:
    """The client-dialect error response: Anthropic's for Anthropic paths and clients, else
    OpenAI's."""
    if scope is not None and _speaks_anthropic(scope):
        request_id = (scope.get("state") or {}).get("request_id")
        status, body, headers = anthropic_error_response(err, request_id)
    else:
        status, body, headers = error_response(err)
    return JSONResponse(body, status_code=status, headers=headers)


class GatewayApp(FastAPI):
    """FastAPI with the front door (`server/front_door.py`) in front of FastAPI's own layers:
    every HTTP request meets it first, and the chat requests it answers itself never enter
    them (no frames of theirs held for a stream's life, no wrapper per SSE chunk)."""

    door: FrontDoor | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        door = self.door
        if door is None or scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        await door(scope, receive, send)

    def http_entry(self) -> ASGIApp:
        """What serves an HTTP request, for a server that calls it without this layer
        (`server/http1_shared.py`): the front door (which sets `scope["app"]` to this app)."""
        return self.door if self.door is not None else self


def create_app(
    settings: Settings,
    *,
    upstream_transport: httpx.AsyncBaseTransport | None = None,
    chat_transport: ChatTransport | None = None,
    long_lived: bool = False,
) -> FastAPI:
    """`upstream_transport` / `chat_transport`: test seams (see `build_services`);
    `long_lived`: the app is its process's whole life (`ki2api serve`), so what start-up
    built is frozen out of the garbage collector's sight, and its threads share fewer malloc
    arenas (`server/allocator.py`)."""
    if long_lived:
        limit_arenas()  # before any thread of ours starts

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await build_services(
            settings, upstream_transport=upstream_transport, chat_transport=chat_transport
        )
        app.state.services = services
        # Load the tokenizer's vocabulary now (~0.1 s), not inside the first request.
        await asyncio.to_thread(default_counter().count, "warm-up")
        # What start-up built (modules, the vocabulary, the services) lives as long as the
        # process: out of the collector's sight, a full collection stops walking it again and
        # again under load.
        if long_lived:
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            await services.aclose()

    app = GatewayApp(
        title="Ki2API",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    _include_routers(app)
    _install_error_handlers(app)
    app.door = _front_door(app, settings)
    return app


def _front_door(app: GatewayApp, settings: Settings) -> FrontDoor:
    def limit_error(err: GatewayError, scope: Scope) -> ASGIApp:
        return render_error(err, scope)

    def usage_log() -> UsageLog | None:
        services = getattr(app.state, "services", None)
        return services.usage if services is not None else None

    def store_of() -> StateStore | None:
        services = getattr(app.state, "services", None)
        return services.store if services is not None else None

    return FrontDoor(
        functools.partial(FastAPI.__call__, app),
        scope_app=app,
        keys=settings.api_keys,
        usage=usage_log,
        store=store_of,
        on_error=limit_error,
        on_exception=route_exception_response,
        routes={"/v1/chat/completions": chat_completions, "/v1/messages": create_message},
        max_body_bytes=settings.max_body_bytes,
        # DNS rebinding defence (server/hosts.py): only when bound to loopback
        allowed_hosts=settings.allowed_hosts if is_loopback_host(settings.host) else None,
        json_access_log=settings.log_format == "json",
    )


def _include_routers(app: FastAPI) -> None:
    for router in (
        openai_router,
        responses_router,
        anthropic_router,
        shared_router,
        metrics_router,
        console_api.router,  # the web console (server/console/): ADMIN_KEY turns it on
        console_accounts.router,
        console_api.fallback,
        console_pages.router,
    ):
        app.include_router(router)


def create_app_from_env() -> FastAPI:
    """The app of one worker of `ki2api serve --workers N` (settings from the environment)."""
    return create_app(load_settings(), long_lived=True)


async def _on_gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    trace = trace_of(request.scope)
    if trace is not None:
        trace.fail(exc.kind.value)
    return render_error(exc, request.scope)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        err = GatewayError(
            ErrorKind.INVALID_REQUEST, f"Method {request.method} is not allowed on this path."
        )
        response = render_error(err, request.scope)
        response.status_code = 405
        response.headers["allow"] = _allow(exc)
        return response
    kind = ErrorKind.NOT_FOUND if exc.status_code == 404 else ErrorKind.INVALID_REQUEST
    message = f"Unknown path {request.url.path}." if exc.status_code == 404 else str(exc.detail)
    return render_error(GatewayError(kind, message), request.scope)


async def _on_client_disconnect(request: Request, exc: Exception) -> Response:
    """The client went away while its request was arriving: nobody to answer, nothing
    broken. One quiet line, the usage row says `cancelled`; the response goes nowhere."""
    trace = trace_of(request.scope)
    if trace is not None:
        trace.fail(ErrorKind.CANCELLED.value)
    log.info(
        "%s %s: the client went away before its request arrived",
        request.method,
        request.url.path,
    )
    return Response(status_code=499)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    if isinstance(exc, StoreAway):  # what the state store's absence could not spare
        away = "The gateway's state store is unreachable for a moment; try again."
        err = GatewayError(ErrorKind.UPSTREAM_UNAVAILABLE, away, retryable=True, retry_after=1)
        return render_error(err, request.scope)
    return render_error(
        GatewayError(ErrorKind.INTERNAL, "The gateway hit an internal error."), request.scope
    )


async def _on_console_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, console_api.ConsoleError)
    return console_api.console_error_response(exc)


async def route_exception_response(request: Request, exc: Exception) -> Response:
    """What FastAPI's handlers make of an exception of a chat route the front door calls
    directly (`server/front_door.py`): a GatewayError, a client gone while its request
    arrived, and anything else (the front door raises it on after sending this answer, as
    Starlette's ServerErrorMiddleware does, so it is logged with its traceback)."""
    if isinstance(exc, GatewayError):
        return await _on_gateway_error(request, exc)
    if isinstance(exc, ClientDisconnect):
        return await _on_client_disconnect(request, exc)
    return await _on_unexpected(request, exc)


def _install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(console_api.ConsoleError, _on_console_error)
    app.add_exception_handler(GatewayError, _on_gateway_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(ClientDisconnect, _on_client_disconnect)
    app.add_exception_handler(Exception, _on_unexpected)


def _allow(exc: StarletteHTTPException) -> str:
    headers = exc.headers or {}
    return headers.get("Allow", headers.get("allow", ""))
