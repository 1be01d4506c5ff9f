"""Waitline: the bounded, first-come-first-served queue of requests waiting for a slot.

A request that finds every account it could use at its cap (or not yet due by its pace) takes a
`Ticket` and waits. Only a ticket that has been *called* tries to take a slot, so a newcomer
never overtakes a request already waiting (fair per process). A freed slot calls the first
uncalled ticket (`call`); a called ticket that could not use the slot (it wanted another
account) passes the call on to the next one (`pass_on`); when the head leaves, the new head is
nudged (woken without a turn) so that it looks for itself and starts its own timers (pace, or
the poll for slots freed by other workers).
Event-driven: one future per waiting request, no polling of our own.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Ticket", "Waitline"]


class Ticket:
    """One waiting request's place in the line."""

    __slots__ = ("_wake", "called")

    def __init__(self) -> None:
        self.called = False  # its turn to try for a slot
        self._wake: asyncio.Future[None] | None = None

    def _call(self) -> None:
        self.called = True
        self._nudge()

    def _nudge(self) -> None:
        """Wake it without giving it a slot's turn (it looks for itself, e.g. as the new head)."""
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)


class Waitline:
    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self._line: deque[Ticket] = deque()

    def __len__(self) -> int:
        return len(self._line)

    def full(self) -> bool:
        return len(self._line) >= self.max_waiting

    def join(self) -> Ticket:
        """A ticket at the back of the line (the caller checks `full()` first)."""
        ticket = Ticket()
        self._line.append(ticket)
        return ticket

    def first(self, ticket: Ticket) -> bool:
        return bool(self._line) and self._line[0] is ticket

    def call(self) -> None:
        """A slot was freed: the first ticket not called yet gets its turn."""
        for ticket in self._line:
            if not ticket.called:
                ticket._call()
                return

    def pass_on(self, ticket: Ticket) -> None:
        """`ticket` was called but could not use the slot: it waits again, and the next ticket
        not called yet gets the turn."""
        ticket.called = False
        seen = False
        for other in self._line:
            if seen and not other.called:
                other._call()
                return
            seen = seen or other is ticket

    def leave(self, ticket: Ticket, *, used: bool) -> None:
        """`ticket` leaves the line (served, refused or gone). A call it did not use passes on;
        a head that leaves calls the new head."""
        was_first = self.first(ticket)
        try:
            self._line.remove(ticket)
        except ValueError:
            return
        if ticket.called and not used:
            self.call()
        elif was_first and self._line:
            self._line[0]._nudge()  # the new head starts its own timers (pace, poll)

    async def wait(self, ticket: Ticket, timeout: float) -> bool:
        """Wait until `ticket` is called or nudged, or `timeout` seconds pass; True when it was
        called (a freed slot's turn)."""
        if ticket.called:
            return True
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ticket._wake = wake
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await wake
        except TimeoutError:
            pass
        finally:
            ticket._wake = None
        return ticket.called
