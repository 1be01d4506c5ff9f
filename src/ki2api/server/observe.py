"""What each finished request adds to the metrics, and its JSON access line (`LOG_FORMAT=json`).

`ObserveMiddleware` sits just inside `RequestIdMiddleware` (it reads the request id) and outside
the rest: when a response is over it increments the request counter, observes the duration (and,
for a stream, the time to its first content: the route sends the 200 only with the first
content), adds the tokens, and in JSON mode logs one line. The chat routes' `RequestTrace`
(`server/accounting.py`) supplies the model, account, key name, attempts and tokens; the time to
the response's start goes back to it (`FIRST_BYTE_AT`: the usage row's ttft_ms). The console's
paths (`/`, `/ui…`) are not the client API: not counted. Cost: a few counter increments and two
histogram observations per request, nothing per event.
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ki2api.core.errors import ErrorKind
from ki2api.core.trace import RequestTrace
from ki2api.metrics import DURATION, REQUESTS, STREAMS_OPEN, TOKENS, TTFT
from ki2api.server.accounting import FIRST_BYTE_AT, outcome_of, trace_of
from ki2api.server.console.console_session import is_console_path

__all__ = ["ObserveMiddleware", "route_label"]

access_log = logging.getLogger("ki2api.access")

_ROUTES = frozenset(
    {
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/responses",
        "/v1/models",
        "/health",
        "/metrics",
        "/api/hello",
    }
)
_MODEL_LABEL_MAX = 80


def route_label(path: str) -> str:
    """The route a path belongs to: a bounded set of label values (never a client's path)."""
    if path in _ROUTES:
        return path
    if path.startswith("/v1/responses/"):
        return "/v1/responses/{id}"
    if path.startswith("/v1/models/"):
        return "/v1/models/{id}"
    return "other"


class ObserveMiddleware:
    def __init__(self, app: ASGIApp, *, json_access_log: bool) -> None:
        self.app = app
        self._json = json_access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_console_path(str(scope.get("path", ""))):
            await self.app(scope, receive, send)  # the console is no client API: not counted
            return
        started = time.perf_counter()
        status = 0
        first_at = 0.0
        streaming = False

        async def send_and_note(message: Message) -> None:
            nonlocal status, first_at, streaming
            if message["type"] == "http.response.start":
                status, first_at = int(message["status"]), time.perf_counter()
                scope.setdefault("state", {})[FIRST_BYTE_AT] = first_at  # the usage row's ttft
                if status == 200 and _is_sse(message):
                    streaming = True
                    STREAMS_OPEN.inc()
            await send(message)

        failed: str | None = None
        try:
            await self.app(scope, receive, send_and_note)
        except asyncio.CancelledError:
            failed = ErrorKind.CANCELLED.value
            raise
        except BaseException:
            failed = ErrorKind.INTERNAL.value if status == 0 else ErrorKind.CANCELLED.value
            raise
        finally:
            if streaming:
                STREAMS_OPEN.dec()
            ttft = first_at - started if streaming else None
            self._finish(scope, status, time.perf_counter() - started, ttft, failed)

    def _finish(
        self, scope: Scope, status: int, duration: float, ttft: float | None, failed: str | None
    ) -> None:
        trace = trace_of(scope)
        route = route_label(str(scope.get("path", "")))
        model = (trace.model or "")[:_MODEL_LABEL_MAX] if trace is not None else ""
        key = _key_label(trace.client_key) if trace is not None else ""
        outcome = (trace.outcome if trace is not None else None) or failed or outcome_of(status)
        REQUESTS.labels(route, model, outcome, key).inc()
        if trace is not None:
            DURATION.labels(route, model).observe(duration)
            if ttft is not None:
                TTFT.labels(route, model).observe(ttft)
            if trace.input_tokens and outcome == "ok":  # tokens of answered requests only
                TOKENS.labels("in", model, key).inc(trace.input_tokens)
            if trace.output_tokens and outcome == "ok":
                TOKENS.labels("out", model, key).inc(trace.output_tokens)
        if self._json:
            fields = _access_fields(scope, trace, status, outcome, duration, ttft)
            access_log.info("%s %s %d", scope.get("method", ""), route, status, extra=fields)


def _access_fields(
    scope: Scope,
    trace: RequestTrace | None,
    status: int,
    outcome: str,
    duration: float,
    ttft: float | None,
) -> dict[str, object]:
    """The request's fields of its JSON log line: names and numbers, never content or keys."""
    state = scope.get("state") or {}
    fields: dict[str, object] = {
        "request_id": state.get("request_id"),
        "method": scope.get("method"),
        "route": route_label(str(scope.get("path", ""))),
        "status": status,
        "outcome": outcome,
        "duration_ms": round(duration * 1000, 1),
    }
    if ttft is not None:
        fields["ttft_ms"] = round(ttft * 1000, 1)
    if trace is not None:
        fields.update(
            model=trace.model,
            stream=trace.stream,
            account=trace.account_id,
            key=trace.client_key,
            attempts=trace.attempts,
            tokens_in=trace.input_tokens,
            tokens_out=trace.output_tokens,
        )
    return {"ki2api": fields}


def _key_label(client_key: str) -> str:
    """The key's name, or `invalid` for every wrong key alike (one series, not one per guess)."""
    return "invalid" if client_key.startswith("invalid:") else client_key


def _is_sse(message: Message) -> bool:
    for name, value in message.get("headers", ()):
        if name.lower() == b"content-type":
            return bool(value.startswith(b"text/event-stream"))
    return False
