"""Many timeouts on one timer of the event loop.

A held stream has two timeouts running at all times: the upstream read timeout
(`kiro/http11.py`) and the keep-alive interval (`server/pump.py`). A timer of the loop costs
about 0.5 KB while it is set (uvloop's TimerHandle, its UVTimer, the libuv handle and the bound
callback); an entry here is one small list in a heap, and the loop has one timer for the
earliest entry. Entries are not removed when cancelled (their owner is let go, the list stays
until it falls due), and their owners set an entry for a wait only when they have none due
earlier: a later wait keeps the entry, which sets itself again when it fires early (see the
owners' `expired`). So a stream sets about one entry per timeout period, not one per wait.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import weakref
from typing import Any, Protocol

__all__ = ["DeadlineWait", "Deadlines", "Entry", "Expiring", "deadlines"]

# [when (loop time), tie-breaker, owner or None once cancelled]
Entry = list[Any]


class Expiring(Protocol):
    def expired(self) -> None:
        """Called at (or just after) the entry's time, inside the loop."""


class Deadlines:
    """The entries of one event loop (`deadlines()`), on one timer."""

    __slots__ = ("_due", "_firing", "_heap", "_order", "_timer")

    def __init__(self) -> None:
        self._heap: list[Entry] = []
        self._order = itertools.count()
        self._timer: asyncio.Handle | None = None  # (a time already past gives a plain Handle)
        self._due = 0.0  # when the timer fires
        self._firing = False

    def at(self, when: float, owner: Expiring) -> Entry:
        """`owner.expired()` at loop time `when`, unless `cancel`ed before."""
        entry: Entry = [when, next(self._order), owner]
        heapq.heappush(self._heap, entry)
        if not self._firing:
            timer = self._timer
            if timer is None or when < self._due:
                if timer is not None:
                    timer.cancel()
                self._set(asyncio.get_running_loop(), when)
        return entry

    def _set(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._due = when
        self._timer = loop.call_at(when, self._fire)

    @staticmethod
    def cancel(entry: Entry) -> None:
        entry[2] = None

    def __len__(self) -> int:
        return len(self._heap)

    def _fire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        heap = self._heap
        self._firing = True
        try:
            while heap and heap[0][0] <= now:
                owner = heapq.heappop(heap)[2]
                if owner is None:
                    continue
                try:
                    owner.expired()
                except Exception as exc:  # one owner's failure must not stop the others'
                    loop.call_exception_handler({"message": "expired() failed", "exception": exc})
        finally:
            self._firing = False
            if heap:
                self._set(loop, heap[0][0])


_LOOPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines] = (
    weakref.WeakKeyDictionary()
)


def deadlines() -> Deadlines:
    """The running loop's entries (keep the result: this looks the loop up)."""
    loop = asyncio.get_running_loop()
    found = _LOOPS.get(loop)
    if found is None:
        found = _LOOPS[loop] = Deadlines()
    return found


class DeadlineWait:
    """One wait at a time for something to arrive, timed out by an entry on the loop's shared
    timer (the upstream read of `kiro/http11.py`, the pump of `server/pump.py`).

    `waiting(timeout)` gives the wait's future: False when something came (the owner calls
    `wake`), True when nothing did for `timeout` s (None: no deadline). The owner keeps one
    entry: set only when none is due earlier, and set again for the wait's deadline when it
    falls due early (the wait began after it was set). The owner calls `init_wait` first."""

    __slots__ = ("deadline", "deadlines", "entry", "loop", "waiter")

    def init_wait(self) -> None:
        self.waiter: asyncio.Future[bool] | None = None
        self.deadline: float | None = None  # of the current wait (loop time)
        self.entry: Entry | None = None  # this owner's place on the timer
        # kept: asking for the running loop costs a getpid() system call on Python 3.11, and
        # a stream waits once per upstream read
        self.loop = asyncio.get_running_loop()
        self.deadlines = deadlines()

    def waiting(self, timeout: float | None) -> asyncio.Future[bool]:
        loop = self.loop
        waiter = self.waiter = loop.create_future()
        if timeout is None:
            self.deadline = None
            return waiter
        self.deadline = deadline = loop.time() + timeout
        entry = self.entry
        if entry is None or entry[0] > deadline:
            if entry is not None:
                Deadlines.cancel(entry)
            self.entry = self.deadlines.at(deadline, self)
        return waiter

    def wake(self) -> None:
        """Something arrived: the wait (if any) ends with False."""
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(False)

    def expired(self) -> None:
        self.entry = None
        waiter, deadline = self.waiter, self.deadline
        if waiter is None or waiter.done() or deadline is None:
            return  # nobody waits with a deadline: the next such wait sets an entry again
        if self.loop.time() < deadline:
            self.entry = self.deadlines.at(deadline, self)
        else:
            self.waiter = None
            waiter.set_result(True)

    def stop_timing(self) -> None:
        entry, self.entry = self.entry, None
        if entry is not None:
            Deadlines.cancel(entry)
