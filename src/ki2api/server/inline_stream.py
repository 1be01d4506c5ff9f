"""A streamed answer on the request's own task, under the gateway's own server.

With the pump (`server/pump.py`) a streamed answer runs on two tasks: the pump reads the
upstream, and the request's task waits for it with a deadline (for the keep-alives) and writes.
Every upstream read then costs two task steps and a future. Under our server
(`server/http1.py`) the request's task reads the upstream itself, and the keep-alives are
written by a `Ticker` (an entry on the loop's shared timer, `core/deadlines.py`) straight to the
connection, through the `ki2api.write_now` scope extension, without waking the task. Measured
with `make bench` (issue 17): one task step and one task fewer per stream.

What the client sees is the pump path's, byte for byte: the same chunks, a keep-alive after
`keepalive_s` without a write, the timeout error after `idle_limit_s` without an upstream
batch (the ticker cancels the task, and the body turns that cancellation into the error), an
in-stream error for any failure after the 200, and no finish without the upstream's. Any other
ASGI server (the extension absent) gets the pump path (`server/streaming.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.types import Receive, Scope, Send

from ki2api.core.deadlines import Deadlines, Entry, deadlines
from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.events import Event
from ki2api.core.trace import RequestTrace
from ki2api.server.disconnect import client_watch
from ki2api.server.http1_exchange import WRITE_NOW
from ki2api.server.streaming import (
    SSEResponse,
    StreamEncoder,
    check_finished,
    fail_trace,
    in_stream_error,
    timeout_error,
)

__all__ = ["InlineSSEResponse", "Ticker", "can_write_now", "first_batch"]

WriteNow = Callable[[bytes], bool]


def can_write_now(scope: Scope) -> bool:
    """Whether the server offers the `ki2api.write_now` extension (our own does)."""
    return WRITE_NOW in (scope.get("extensions") or {})


async def first_batch(batches: AsyncIterator[list[Event]]) -> list[Event]:
    """The upstream's first batch (errors before it propagate with their real status)."""
    try:
        return await anext(batches)
    except StopAsyncIteration:
        raise GatewayError(
            ErrorKind.UPSTREAM_PROTOCOL, "Kiro ended the response without content"
        ) from None


class Ticker:
    """The keep-alives of one stream, and its idle limit (see the module's docstring)."""

    __slots__ = (
        "_deadlines",
        "_entry",
        "_idle_limit",
        "_interval",
        "_keepalive",
        "_last_batch",
        "_last_write",
        "_loop",
        "_task",
        "_write",
        "timed_out",
    )

    def __init__(
        self,
        write: WriteNow,
        keepalive: bytes,
        interval: float,
        idle_limit: float,
        task: asyncio.Task[Any],
    ) -> None:
        self._write = write
        self._keepalive = keepalive
        self._interval = interval
        self._idle_limit = idle_limit
        self._task: asyncio.Task[Any] | None = task
        self._loop = asyncio.get_running_loop()
        self._deadlines: Deadlines = deadlines()
        self._last_batch = self._last_write = self._loop.time()
        self._entry: Entry | None = self._deadlines.at(self._last_write + interval, self)
        self.timed_out = False

    def wrote(self) -> None:
        """An upstream batch came (and goes out): silence counts from now."""
        self._last_batch = self._last_write = self._loop.time()

    def stop(self) -> None:
        self._task = None
        entry, self._entry = self._entry, None
        if entry is not None:
            Deadlines.cancel(entry)

    def expired(self) -> None:
        self._entry = None
        if self._task is None:
            return
        now = self._loop.time()
        due = self._last_write + self._interval
        if now < due:  # something was written since the entry was set
            self._entry = self._deadlines.at(due, self)
            return
        writable = self._write(b"")  # False while the client does not read: no silence
        if not writable:
            self._last_batch = now
        elif now - self._last_batch >= self._idle_limit:
            self.timed_out = True
            self._task.cancel()
            return
        elif self._write(self._keepalive):
            self._last_write = now
        self._entry = self._deadlines.at(now + self._interval, self)


class InlineSSEResponse(SSEResponse):
    """The SSE response of an answer whose first batch has arrived, read and written on the
    request's task (see the module's docstring). Its `body_iterator` may be wrapped like any
    streaming response's (the Responses route stores the answer that way)."""

    def __init__(
        self,
        batches: AsyncIterator[list[Event]],
        first: list[Event],
        encoder: StreamEncoder,
        *,
        keepalive: bytes,
        keepalive_s: float,
        idle_limit_s: float,
        trace: RequestTrace | None,
    ) -> None:
        self.batches = batches
        self.first: list[Event] | None = first
        self.encoder = encoder
        self.keepalive = keepalive
        self.keepalive_s = keepalive_s
        self.idle_limit_s = idle_limit_s
        self.trace = trace
        self.ticker: Ticker | None = None  # set when the response is sent
        self.task: asyncio.Task[Any] | None = None
        super().__init__(self._body())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watch = client_watch(scope, receive)
        if watch.gone:
            await _aclose(self.body_iterator)
            await _aclose(self.batches)  # (the body never started: its finally did not run)
            return
        self.task = task = watch.guard()
        write_now: WriteNow = scope["extensions"][WRITE_NOW]
        self.ticker = ticker = Ticker(
            write_now, self.keepalive, self.keepalive_s, self.idle_limit_s, task
        )
        try:
            await self.send_all(send)
        except asyncio.CancelledError:
            if not (watch.ours(task) or (ticker.timed_out and task.uncancel() == 0)):
                raise
        finally:
            ticker.stop()
            watch.unguard(task)

    async def _body(self) -> AsyncIterator[bytes]:
        encoder, trace, batches = self.encoder, self.trace, self.batches
        ticker, task = self.ticker, self.task
        assert ticker is not None and task is not None, "the body is read by __call__"
        batch, self.first = self.first, None
        ended = False
        try:
            out = encoder.feed_all(batch) if batch else b""
            del batch
            if out:
                yield out
            async for batch in batches:
                ticker.wrote()
                out = encoder.feed_all(batch)
                if out:
                    yield out
            ended = check_finished(encoder)
        except asyncio.CancelledError:
            if not ticker.timed_out or task.uncancel() > 0:
                raise
            ticker.timed_out = False  # handled here: the response goes on to its end
            ended = True
            yield in_stream_error(encoder, trace, timeout_error(self.idle_limit_s))
        except Exception as exc:
            ended = True
            yield in_stream_error(encoder, trace, exc)
        finally:
            if not ended:  # the client went away (or the server is stopping) mid-stream
                fail_trace(trace, ErrorKind.CANCELLED.value)
            await _aclose(batches)


async def _aclose(iterator: object) -> None:
    """Close an async generator (its `finally` closes what it holds: the upstream response)."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()
