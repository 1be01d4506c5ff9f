"""Real streaming: 200 only after the upstream's first events; keep-alives; in-stream errors."""

from __future__ import annotations

import asyncio
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
    "check_finished",
    "fail_trace",
    "in_stream_error",
    "logged",
    "timeout_error",
    "SSEResponse",
    "StreamEncoder",
    "collect",
    "open_stream",
    "sse_response",
]

log = logging.getLogger("ki2api.stream")

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no", "connection": "keep-alive"}
# what Starlette's `init_headers` makes of them, made once (not 11 objects per stream)
_RAW_HEADERS = [
    *((name.encode("latin-1"), value.encode("latin-1")) for name, value in SSE_HEADERS.items()),
    (b"content-type", b"text/event-stream; charset=utf-8"),
]


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


def timeout_error(seconds: float) -> GatewayError:
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
        raise timeout_error(first_timeout or 0.0) from None
    except StopAsyncIteration:
        await pump.aclose()
        raise GatewayError(
            ErrorKind.UPSTREAM_PROTOCOL, "Kiro ended the response without content"
        ) from None
    except BaseException:
        await pump.aclose()
        raise
    return FirstBatch(pump, first)


def _coalesced(batches: list[list[Event]]) -> list[Event]:
    """The batches already buffered, as one (the writer sends them in one piece)."""
    batch = batches[0]
    for more in batches[1:]:
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
    pump = stream.pump
    batch: list[Event] | None = stream.first
    del stream  # (nor its first batch, once sent)
    idle = 0.0
    ended = False
    try:
        while True:
            if batch is None:
                idle += keepalive_s
                if idle >= idle_limit_s:
                    raise timeout_error(idle_limit_s)
                yield keepalive
            else:
                idle = 0.0
                out = encoder.feed_all(batch)
                if out:
                    yield out
            # the wait inline, on the pump's future: no coroutine frame per held stream for it
            if not pump.ready and await pump.waiting(keepalive_s):
                batch = None  # silence: a keep-alive
                continue
            try:
                batch = _coalesced(pump.take())
            except StopAsyncIteration:
                break
        ended = check_finished(encoder)
    except Exception as exc:
        ended = True
        yield in_stream_error(encoder, trace, exc)
    finally:
        if not ended:  # the client went away (or the server is stopping) mid-stream
            fail_trace(trace, ErrorKind.CANCELLED.value)
        await pump.aclose()


def check_finished(encoder: StreamEncoder) -> bool:
    """True when the answer ended with its finish; else the error that says it did not."""
    if not encoder.finished:
        raise GatewayError(ErrorKind.UPSTREAM_PROTOCOL, "the Kiro response ended without a finish")
    return True


def in_stream_error(encoder: StreamEncoder, trace: RequestTrace | None, exc: Exception) -> bytes:
    """The in-stream error chunk of a failure after the 200, logged and noted in the trace."""
    err = logged(exc)
    fail_trace(trace, err.kind.value)
    return encoder.error(err)


def logged(exc: Exception) -> GatewayError:
    """The in-stream error for a failure after the start, logged (called while handling it)."""
    if isinstance(exc, GatewayError):
        log.warning("stream failed after start: %s", exc.message)
        return exc
    log.exception("stream failed after start")
    return GatewayError(ErrorKind.INTERNAL, "The gateway hit an internal error.")


def fail_trace(trace: RequestTrace | None, outcome: str) -> bool:
    if trace is not None:
        trace.fail(outcome)
    return True


class SSEResponse(StreamingResponse):
    """Starlette's `StreamingResponse` without the task group it starts per response to hear
    a disconnect (two tasks and their cancel scopes): the request's `ClientWatch` (already
    listening since the wait for the first batch) cancels the writing instead. A client gone
    mid-stream ends the response quietly, as Starlette's does; the body's `finally` notes it
    and closes the upstream. The writing is inline in `__call__` (Starlette's `stream_response`
    and the watch's `run` would be two more coroutine frames per held stream)."""

    def __init__(self, content: AsyncIterator[bytes]) -> None:
        self.body_iterator = content
        self.status_code = 200
        self.media_type = "text/event-stream"
        self.background = None
        self.raw_headers = list(_RAW_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        watch = client_watch(scope, receive)
        if watch.gone:
            return
        task = watch.guard()
        try:
            await self.send_all(send)
        except asyncio.CancelledError:
            if not watch.ours(task):
                raise
        finally:
            watch.unguard(task)

    async def send_all(self, send: Send) -> None:
        """The 200's head, every chunk of the body, the end."""
        start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
        await send(start)
        async for chunk in self.body_iterator:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


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
        _body(stream, encoder, keepalive_s, idle_limit_s, keepalive or sse_comment(), trace)
    )
