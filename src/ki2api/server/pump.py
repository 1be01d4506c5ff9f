"""Pump: read an upstream async iterator in its own task so the consumer can wait with a deadline.

Waiting costs one bare future per wait and one entry on the loop's shared timer per pump (no
task per event, no timer per wait: core/deadlines.py),
which keeps the per-event overhead low on the streaming hot path. A consumer may await the
future itself (`waiting`, then `take`): a held stream keeps no coroutine frame for the wait.
Cancelling the pump (`aclose`) cancels the reader task, which closes the upstream generator
(and so the upstream HTTP response).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from ki2api.core.deadlines import DeadlineWait

__all__ = ["Pump", "PumpTimeout"]

T = TypeVar("T")


class PumpTimeout(Exception):
    """No item arrived within the wait's deadline (the source is still running)."""


class Pump(DeadlineWait, Generic[T]):
    """`waiting(timeout)` is a future for the next item or the source's end: False when one
    came, True when nothing did for `timeout` s (call it only when not `ready`)."""

    __slots__ = (
        "_done",
        "_error",
        "_items",
        "_max",
        "_source",
        "_space",
        "_task",
    )

    def __init__(self, source: AsyncIterator[T], *, max_buffered: int = 1024) -> None:
        self._source = source
        self._items: list[T] = []  # a batch or two at a time (a deque costs 760 B per stream)
        self._done = False
        self._error: BaseException | None = None
        self.init_wait()  # its waits: futures timed on the loop's shared timer
        self._space: asyncio.Future[None] | None = None
        self._max = max_buffered
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            async for item in self._source:
                self._items.append(item)
                self.wake()
                if len(self._items) >= self._max:
                    self._space = asyncio.get_running_loop().create_future()
                    await self._space
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer
            self._error = exc
        finally:
            self._done = True
            self.wake()
            closer = getattr(self._source, "aclose", None)
            if closer is not None:
                await closer()

    @property
    def ready(self) -> bool:
        """An item is buffered, or the source has ended: `take` will not wait."""
        return bool(self._items) or self._done

    def take(self) -> list[T]:
        """Every item buffered (at least one), without waiting; at the end the source's error,
        or StopAsyncIteration. Call it when `ready`."""
        if not self._items:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            raise StopAsyncIteration
        return self.drain()

    async def get(self, timeout: float | None) -> T:
        """The next item; raises StopAsyncIteration at the end, PumpTimeout after `timeout` s."""
        while not self.ready:
            if await self.waiting(timeout):
                raise PumpTimeout
        if not self._items:
            self.take()  # raises
        item = self._items.pop(0)
        space = self._space
        if space is not None and not space.done():
            space.set_result(None)
        return item

    def drain(self) -> list[T]:
        """Every item already buffered, without waiting (lets the writer coalesce sends)."""
        items, self._items = self._items, []
        space = self._space
        if space is not None and not space.done():
            space.set_result(None)
        return items

    async def aclose(self) -> None:
        """Stop reading and close the source (and its upstream response).

        The wait is shielded: our caller may be cancelled again and again (a client disconnect
        inside an anyio cancel scope), and a cancelled awaiter cancels what it awaits, which
        would abort the upstream close half-way. The reader finishes closing on its own.
        """
        self.stop_timing()
        if not self._task.done():
            self._task.cancel()
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if not self._task.done():
                raise
        except Exception:
            pass
