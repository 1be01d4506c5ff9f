"""ASGI middleware: request ids, processing time, and the request body size limit."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ki2api.core.errors import ErrorKind, GatewayError

__all__ = ["BodyLimitMiddleware", "RequestIdMiddleware", "given_request_id"]

_PRINTABLE_ID = re.compile(rb"[\x20-\x7e]{1,128}")


class RequestIdMiddleware:
    """Adds `x-request-id` (and Anthropic's `request-id`) to every response and
    `openai-processing-ms` to every 2xx; puts the id in `scope["state"]["request_id"]`. A
    client's own `x-request-id` is kept when it is printable ASCII of at most 128 characters;
    otherwise (or without one) the gateway makes one."""

    def __init__(self, app: ASGIApp, *, id_factory: Callable[[], str] | None = None) -> None:
        self.app = app
        self._new_id = id_factory or (lambda: "req_" + secrets.token_hex(12))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = given_request_id(scope) or self._new_id()
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers.append((b"request-id", request_id.encode()))
                if 200 <= message["status"] < 300:
                    ms = int((time.perf_counter() - started) * 1000)
                    headers.append((b"openai-processing-ms", str(ms).encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


def given_request_id(scope: Scope) -> str | None:
    """The client's `x-request-id`, if it is fit to echo and log."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            value = value.strip()
            return value.decode() if _PRINTABLE_ID.fullmatch(value) else None
    return None


class BodyLimitMiddleware:
    """Refuses bodies over `max_bytes` (by Content-Length, and while streaming in) with 413."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, on_error: Callable[[GatewayError, Scope], ASGIApp]
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.on_error(self._error(), scope)(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise self._error()
            return message

        await self.app(scope, counting_receive, send)

    def _error(self) -> GatewayError:
        return GatewayError(
            ErrorKind.REQUEST_TOO_LARGE,
            f"Request body is larger than the limit of {self.max_bytes} bytes "
            "(KI2API_MAX_BODY_BYTES).",
        )
