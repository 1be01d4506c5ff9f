"""FrontDoor: every request's way in and out of the gateway, in one ASGI layer.

It sits in front of FastAPI's own layers (`app.GatewayApp`). What used to be six middlewares,
each wrapping the next (and each wrapping `send`, so every SSE chunk crossed six closures), is
one pass with one `send` wrapper. In order, per request:

1. the request id (`middleware.given_request_id`, else a new one), echoed as `x-request-id` and
   `request-id`, with `openai-processing-ms` on a 2xx;
2. the `Host` check of a loopback-bound gateway (`hosts.host_refusal`: a 403 in the client's
   dialect);
3. the store key the request presents (`client_keys.ClientKeyFinder`), not for the console;
4. the chat paths' `RequestTrace` and the usage row it becomes (`accounting.Accounting`);
5. the body size limit (`middleware.body_limit`: by Content-Length, and while it streams in);
6. the route: the two chat endpoints (`routes`, POST only) are called here directly, without
   FastAPI's router, dependency solver, exception layers and their frames held for a stream's
   whole life; the rest goes through FastAPI. An exception gets the answer FastAPI's handlers
   would give it (`on_exception`: the same handlers);
7. when the response is over: the metrics and the JSON access line (`observe.Observer`) and
   the usage row (exactly one per chat request, whatever happened).

The console's paths (`/`, `/ui…`) get a request id and nothing else. Measured with `make bench`
(issue 17): fewer layers cut the gateway's CPU per request and its memory per held stream.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.trace import RequestTrace
from ki2api.metrics import STREAMS_OPEN
from ki2api.server.accounting import CHAT_PATHS, Accounting
from ki2api.server.client_keys import ClientKeyFinder
from ki2api.server.console.console_session import is_console_path
from ki2api.server.disconnect import RAW_RECEIVE, close_watch
from ki2api.server.hosts import host_refusal
from ki2api.server.middleware import body_limit, given_request_id
from ki2api.server.observe import Observer
from ki2api.state.base import StateStore
from ki2api.state.usage_log import UsageLog

__all__ = ["Endpoint", "FrontDoor"]

Endpoint = Callable[[Request], Awaitable[Response]]
ErrorApp = Callable[[GatewayError, Scope], ASGIApp]
ExceptionResponse = Callable[[Request, Exception], Awaitable[Response]]

_SSE = b"text/event-stream"


def _new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def _none() -> None:
    return None


class FrontDoor:
    """The gateway's one middleware (see the module's docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: tuple[str, ...],
        scope_app: object = None,
        usage: Callable[[], UsageLog | None] = _none,
        store: Callable[[], StateStore | None] = _none,
        on_error: ErrorApp | None = None,
        on_exception: ExceptionResponse | None = None,
        routes: Mapping[str, Endpoint] | None = None,
        max_body_bytes: int | None = None,
        allowed_hosts: tuple[str, ...] | None = None,
        json_access_log: bool = False,
        id_factory: Callable[[], str] = _new_request_id,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`allowed_hosts`: None when the gateway is not bound to loopback (no Host check);
        `on_error`: the client-dialect response of a refusal made here (413, a Host's 403);
        `scope_app`: set as `scope["app"]` (Starlette's `Request.app`), as Starlette does."""
        self.app = app
        self._scope_app = scope_app
        self._accounting = Accounting(usage=usage, keys=keys, clock=clock)
        self._finder = ClientKeyFinder(store=store, keys=keys)
        self._observer = Observer(json_access_log=json_access_log)
        self._on_error = on_error
        self._on_exception = on_exception
        self._routes = dict(routes or {})
        self._max_body = max_body_bytes
        self._allowed = allowed_hosts
        self._new_id = id_factory

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._scope_app is not None:
            scope["app"] = self._scope_app
        state = scope.setdefault("state", {})
        request_id = given_request_id(scope) or self._new_id()
        state["request_id"] = request_id
        visit = _Visit(scope, send, request_id.encode())
        try:
            answer = await self._enter(visit, scope, receive)
            if answer is not None:  # awaited here: no frame of _enter held while it runs
                await answer
        except asyncio.CancelledError:  # the server stopping, or the client gone
            visit.fail(ErrorKind.CANCELLED.value)
            raise
        except Exception as exc:
            if visit.status == 0:
                await self._answer(exc, scope, receive, visit.send)
            # no answer yet, or the 5xx of this very failure: ours; after a 2xx: cut short
            internal = visit.status == 0 or visit.status >= 500
            visit.fail(ErrorKind.INTERNAL.value if internal else ErrorKind.CANCELLED.value)
            raise
        except BaseException:
            internal = visit.status == 0
            visit.fail(ErrorKind.INTERNAL.value if internal else ErrorKind.CANCELLED.value)
            raise
        finally:
            self._leave(visit, scope)

    async def _enter(self, visit: _Visit, scope: Scope, receive: Receive) -> Awaitable[None] | None:
        """The request's checks, then what answers it (not yet awaited), or None when a
        refusal was the answer."""
        headers = dict(scope.get("headers") or ())  # once, for the Host and the body limit
        if self._allowed is not None:
            refused = host_refusal(headers.get(b"host"), self._allowed)
            if refused is not None:
                await self._refuse(refused, scope, receive, visit.send)
                return None
        if visit.observed:
            await self._finder.note(scope)
        if scope.get("path") in CHAT_PATHS:
            visit.trace = self._accounting.open(scope)
        if self._max_body is not None:
            scope["state"][RAW_RECEIVE] = receive
            limited = body_limit(headers.get(b"content-length"), receive, self._max_body)
            if isinstance(limited, GatewayError):
                await self._refuse(limited, scope, receive, visit.send)
                return None
            receive = limited
        endpoint = self._routes.get(scope["path"]) if scope.get("method") == "POST" else None
        if endpoint is None:
            return self.app(scope, receive, visit.send)
        response = await self._direct(endpoint, scope, receive)
        return response(scope, receive, visit.send)

    async def _refuse(self, err: GatewayError, scope: Scope, receive: Receive, send: Send) -> None:
        if self._on_error is None:
            raise err
        await self._on_error(err, scope)(scope, receive, send)

    async def _direct(self, endpoint: Endpoint, scope: Scope, receive: Receive) -> Response:
        """A chat endpoint without FastAPI's layers (router, dependency solver, exception
        middlewares): what FastAPI's handlers make of a GatewayError or of a client gone
        mid-upload is made here, by the same handlers (anything else: see `_answer`)."""
        request = Request(scope, receive)
        try:
            return await endpoint(request)
        except (GatewayError, ClientDisconnect) as exc:
            if self._on_exception is None:
                raise
            return await self._on_exception(request, exc)

    async def _answer(self, exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
        """An exception nobody answered (before any response: in a step of ours, or a chat
        route called directly) gets the client-dialect 500 that Starlette's error middleware
        gives FastAPI's routes; it is raised on afterwards, and logged, as there."""
        if self._on_exception is None:
            return
        try:
            await (await self._on_exception(Request(scope, receive), exc))(scope, receive, send)
        except Exception:  # the connection is gone too: the original failure is what counts
            pass

    def _leave(self, visit: _Visit, scope: Scope) -> None:
        close_watch(scope)
        if visit.streaming:
            STREAMS_OPEN.dec()
        trace = visit.trace
        try:
            if trace is not None:
                first_at = visit.first_at or None
                self._accounting.close(trace, visit.status, visit.started, first_at)
        finally:
            if visit.observed:
                now = time.perf_counter()
                ttft = visit.first_at - visit.started if visit.streaming else None
                self._observer.finish(scope, visit.status, now - visit.started, ttft, visit.failed)


class _Visit:
    """One request's passage: its response's status and timing, its trace; `send` notes the
    response's start on its way out and adds the request id headers."""

    __slots__ = (
        "_send",
        "failed",
        "first_at",
        "observed",
        "request_id",
        "scope",
        "started",
        "status",
        "streaming",
        "trace",
    )

    def __init__(self, scope: Scope, send: Send, request_id: bytes) -> None:
        self.scope = scope
        self._send = send
        self.request_id = request_id
        self.started = time.perf_counter()
        self.status = 0
        self.first_at = 0.0
        self.streaming = False
        self.observed = not is_console_path(str(scope.get("path", "")))
        self.trace: RequestTrace | None = None
        self.failed: str | None = None

    def fail(self, outcome: str) -> None:
        self.failed = outcome
        if self.trace is not None:
            self.trace.fail(outcome)

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            message = self._started(message)
        await self._send(message)

    def _started(self, message: Message) -> Message:
        status = self.status = int(message["status"])
        self.first_at = now = time.perf_counter()
        rid = self.request_id
        headers = list(message.get("headers", ()))
        headers += ((b"x-request-id", rid), (b"request-id", rid))
        if 200 <= status < 300:
            ms = int((now - self.started) * 1000)
            headers.append((b"openai-processing-ms", str(ms).encode()))
        if self.observed and status == 200 and _is_sse(headers):
            self.streaming = True
            STREAMS_OPEN.inc()
        return {**message, "headers": headers}


def _is_sse(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.startswith(_SSE)
    return False
