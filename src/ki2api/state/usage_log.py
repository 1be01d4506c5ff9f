"""`UsageLog`: the usage rows of finished requests, written to the store in batches.

`add` only appends to a queue (the request path never waits on the database); a background
task writes what is waiting every `flush_interval_s`, or sooner once `max_batch` rows wait.
Each row is written exactly once: a batch leaves the queue when its write starts and comes
back (at the front) only if the write failed, and a write that has started is never
abandoned half-way (cancelling a flush leaves the write running; `aclose` waits for it).
A write can fail after the store has done it (the connection to Redis lost before its
reply): each batch has a name, a failed batch is written again as it was, under its name and
before any newer rows, and the store records a batch written `again` only if it did not
already (`StateStore.record_usage`).

`begin` / `end` bracket a request whose row is still to come. `aclose` waits (at most
`drain_s`) until none is open before its last write: uvicorn cancels the requests that outlive
its graceful shutdown and closes the app right away, while they are still unwinding towards
the `add` of their row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque

from ki2api.state.base import StateStore, UsageRow

__all__ = ["UsageLog"]

_log = logging.getLogger(__name__)


class UsageLog:
    """Batched, non-blocking writer of `UsageRow`s into a `StateStore`."""

    def __init__(
        self,
        store: StateStore,
        *,
        flush_interval_s: float = 0.2,
        max_batch: int = 500,
        max_pending: int = 100_000,
        drain_s: float = 2.0,
    ) -> None:
        self._store = store
        self._interval = flush_interval_s
        self._max_batch = max(1, max_batch)
        self._max_pending = max(1, max_pending)
        self._drain_s = drain_s
        self._open = 0
        self._none_open = asyncio.Event()
        self._none_open.set()
        self._rows: deque[UsageRow] = deque()  # not tried yet
        # batches whose write failed, oldest first: (name, rows), written again as they were
        self._again: deque[tuple[str, list[UsageRow]]] = deque()
        self._again_rows = 0
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._writes: set[asyncio.Future[bool]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._failing = False
        self._drop_warned = False
        self._dropped = 0

    def __repr__(self) -> str:
        return f"UsageLog(pending={self.pending}, running={self._task is not None})"

    @property
    def pending(self) -> int:
        """Rows waiting to be written (a batch being written right now is not counted)."""
        return len(self._rows) + self._again_rows

    @property
    def dropped(self) -> int:
        """Rows thrown away because more than `max_pending` were waiting."""
        return self._dropped

    def add(self, row: UsageRow) -> None:
        """Queue one row. Never blocks, never raises."""
        try:
            self._rows.append(row)
            self._trim()
            if len(self._rows) >= self._max_batch:
                self._wake.set()
        except Exception:  # the request path must not fail on bookkeeping
            _log.debug("usage log: could not queue a row", exc_info=True)

    def begin(self) -> None:
        """A request whose row will come later has started (`aclose` waits for it)."""
        self._open += 1
        self._none_open.clear()

    def end(self) -> None:
        """That request is over (its row added, or none to add)."""
        self._open = max(0, self._open - 1)
        if self._open == 0:
            self._none_open.set()

    def start(self) -> None:
        """Start the background flusher (needs a running event loop; idempotent)."""
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-log")

    async def flush(self) -> bool:
        """Write every row waiting now. True when they were written (or none waited)."""
        async with self._flushing:
            while self._again:  # what failed before goes first, as it was
                name, batch = self._again.popleft()
                self._again_rows -= len(batch)
                if not await self._started(name, batch, again=True):
                    return False
            if not self._rows:
                return True
            batch = list(self._rows)
            self._rows.clear()
            return await self._started(uuid.uuid4().hex, batch, again=False)

    async def _started(self, name: str, batch: list[UsageRow], *, again: bool) -> bool:
        """The batch's write, run to its end even if the caller is cancelled."""
        write = asyncio.ensure_future(self._write(name, batch, again))
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)
        return await asyncio.shield(write)

    async def aclose(self) -> None:
        """Wait (at most `drain_s`) for the rows of requests still open, stop the background
        task and write what is left. Idempotent."""
        if self._open:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._none_open.wait(), self._drain_s)
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        await self.flush()

    # internals -------------------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            if self._stopping:
                return
            if not await self.flush():
                await asyncio.sleep(self._interval)  # the store is failing: do not spin

    async def _write(self, name: str, batch: list[UsageRow], again: bool) -> bool:
        try:
            await self._store.record_usage(batch, batch=name, again=again)
        except Exception as exc:  # keep the batch, write it again (as it is) on the next flush
            self._again.appendleft((name, batch))
            self._again_rows += len(batch)
            self._trim()
            if not self._failing:
                self._failing = True
                _log.warning(
                    "usage log: writing %d rows failed (%s); keeping them for the next flush",
                    len(batch),
                    type(exc).__name__,
                )
            return False
        if self._failing:
            self._failing = self._drop_warned = False
            _log.info("usage log: writing works again")
        return True

    def _trim(self) -> None:
        excess = self.pending - self._max_pending
        if excess <= 0:
            return
        left = excess  # the oldest first: the failed batches', then the new rows'
        while left and self._again:
            name, batch = self._again[0]
            if len(batch) <= left:
                self._again.popleft()
                taken = len(batch)
            else:
                self._again[0] = (name, batch[left:])
                taken = left
            self._again_rows -= taken
            left -= taken
        for _ in range(left):
            self._rows.popleft()
        if not self._drop_warned:
            self._drop_warned = True
            _log.warning(
                "usage log: more than %d rows waiting; dropping the oldest until a write works",
                self._max_pending,
            )
        self._dropped += excess
