"""Real streaming: 200 only after the upstream's first events; keep-alives; in-stream errors."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Protocol

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.events import Event
from ki2api.core.trace import RequestTrace
from ki2api.frontends.sse import sse_comment
from ki2api.server.disconnect import client_watch
from ki2api.server.pump import Pump, PumpTimeout

__all__ = [
    "FirstBatch",
    "SSEResponse",
    "StreamEncoder",
    "collect",
    "open_stream",
    "sse_response",
]

log = logging.getLogger("ki2api.stream")

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no", "connection": "keep-alive"}


class StreamEncoder(Protocol):
    def feed(self, event: Event) -> bytes: ...
    def feed_all(self, events: list[Event]) -> bytes: ...
    def error(self, err: GatewayError) -> bytes: ...
    @property
    def finished(self) -> bool: ...


class FirstBatch:
    """An upstream stream whose first batch has already arrived (the 200 can be committed)."""

    def __init__(self, pump: Pump[list[Event]], first: list[Event]) -> None:
        self.pump = pump
        self.first = first


async def collect(batches: AsyncIterator[list[Event]]) -> list[Event]:
    events: list[Event] = []
    async for batch in batches:
        events.extend(batch)
    return events


def _timeout_error(seconds: float) -> GatewayError:
    return GatewayError(
        ErrorKind.UPSTREAM_TIMEOUT,
        f"Kiro sent nothing for {seconds:g} s (KI2API_FIRST_EVENT_TIMEOUT_S).",
        retryable=True,
    )


async def open_stream(
    batches: AsyncIterator[list[Event]], first_timeout: float | None = None
) -> FirstBatch:
    """Wait for the first upstream batch; errors before it propagate with their real status.
    (The backend enforces the first-event timeout per account; `first_timeout` is a backstop.)"""
    pump: Pump[list[Event]] = Pump(batches)
    try:
        first = await pump.get(first_timeout)
    except PumpTimeout:
        await pump.aclose()
        raise _timeout_error(first_timeout or 0.0) from None
    except StopAsyncIteration:
        await pump.aclose()
        raise GatewayError(
            ErrorKind.UPSTREAM_PROTOCOL, "Kiro ended the response without content"
        ) from None
    except BaseException:
        await pump.aclose()
        raise
    return FirstBatch(pump, first)


async def _next_batch(pump: Pump[list[Event]], keepalive_s: float) -> list[Event] | None:
    """The next events (all that are already buffered, coalesced), or None after silence."""
    try:
        batch = await pump.get(keepalive_s)
    except PumpTimeout:
        return None
    for more in pump.drain():
        batch.extend(more)
    return batch


async def _body(
    stream: FirstBatch,
    encoder: StreamEncoder,
    keepalive_s: float,
    idle_limit_s: float,
    keepalive: bytes,
    trace: RequestTrace | None,
) -> AsyncIterator[bytes]:
    batch: list[Event] | None = stream.first
    idle = 0.0
    ended = False
    try:
        while True:
            if batch is None:
                idle += keepalive_s
                if idle >= idle_limit_s:
                    raise _timeout_error(idle_limit_s)
                yield keepalive
            else:
                idle = 0.0
                out = encoder.feed_all(batch)
                if out:
                    yield out
            try:
                batch = await _next_batch(stream.pump, keepalive_s)
            except StopAsyncIteration:
                break
        if not encoder.finished:
            raise GatewayError(
                ErrorKind.UPSTREAM_PROTOCOL, "the Kiro response ended without a finish"
            )
        ended = True
    except GatewayError as err:
        log.warning("stream failed after start: %s", err.message)
        ended = _fail(trace, err.kind.value)
        yield encoder.error(err)
    except Exception:
        log.exception("stream failed after start")
        ended = _fail(trace, ErrorKind.INTERNAL.value)
        yield encoder.error(GatewayError(ErrorKind.INTERNAL, "The gateway hit an internal error."))
    finally:
        if not ended:  # the client went away (or the server is stopping) mid-stream
            _fail(trace, ErrorKind.CANCELLED.value)
        await stream.pump.aclose()


def _fail(trace: RequestTrace | None, outcome: str) -> bool:
    if trace is not None:
        trace.fail(outcome)
    return True


class SSEResponse(StreamingResponse):
    """Starlette's `StreamingResponse` without the task group it starts per response to hear
    a disconnect (two tasks and their cancel scopes): the request's `ClientWatch` (already
    listening since the wait for the first batch) cancels the writing instead. A client gone
    mid-stream ends the response quietly, as Starlette's does; the body's `finally` notes it
    and closes the upstream."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        try:
            await client_watch(scope, receive).run(self.stream_response(send))
        except GatewayError as err:
            if err.kind is not ErrorKind.CANCELLED:
                raise


def sse_response(
    stream: FirstBatch,
    encoder: StreamEncoder,
    *,
    keepalive_s: float,
    idle_limit_s: float = 300.0,
    keepalive: bytes | None = None,
    trace: RequestTrace | None = None,
) -> SSEResponse:
    """`keepalive`: what is sent after `keepalive_s` of upstream silence (an SSE comment by
    default; the Anthropic route sends its `ping` event)."""
    return SSEResponse(
        _body(stream, encoder, keepalive_s, idle_limit_s, keepalive or sse_comment(), trace),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )
