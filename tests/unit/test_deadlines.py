"""core/deadlines.py: many timeouts on one loop timer (order, cancel, setting again, failures)."""

from __future__ import annotations

import asyncio

from ki2api.core.deadlines import Deadlines, deadlines


class Owner:
    def __init__(self, name: str, log: list[str], again: float | None = None) -> None:
        self.name, self.log, self.again = name, log, again

    def expired(self) -> None:
        self.log.append(self.name)
        if self.again is not None:  # as the pump does when its wait began later
            when, self.again = asyncio.get_running_loop().time() + self.again, None
            deadlines().at(when, self)


async def test_entries_fall_due_in_order_on_one_timer() -> None:
    log: list[str] = []
    now = asyncio.get_running_loop().time()
    shared = deadlines()
    assert shared is deadlines()  # one per loop
    for name, delay in (("c", 0.03), ("a", 0.01), ("b", 0.02)):
        shared.at(now + delay, Owner(name, log))
    await asyncio.sleep(0.06)
    assert log == ["a", "b", "c"]
    assert len(shared) == 0


async def test_a_cancelled_entry_does_not_fire_and_an_earlier_one_moves_the_timer() -> None:
    log: list[str] = []
    now = asyncio.get_running_loop().time()
    shared = deadlines()
    late = shared.at(now + 0.5, Owner("late", log))
    shared.at(now + 0.01, Owner("early", log))  # earlier than the timer: the timer moves
    await asyncio.sleep(0.03)
    assert log == ["early"]
    Deadlines.cancel(late)
    assert late[2] is None


async def test_an_owner_may_set_itself_again_and_a_failing_one_stops_nobody() -> None:
    log: list[str] = []
    errors: list[object] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(context["exception"]))

    class Failing:
        def expired(self) -> None:
            raise RuntimeError("boom")

    now = loop.time()
    shared = deadlines()
    shared.at(now + 0.01, Failing())
    shared.at(now + 0.01, Owner("again", log, again=0.02))
    shared.at(now + 0.015, Owner("other", log))
    await asyncio.sleep(0.06)
    assert log == ["again", "other", "again"]
    assert [str(e) for e in errors] == ["boom"]


def test_a_time_already_past_fires_at_once_on_uvloop_too() -> None:
    """uvloop gives a plain Handle (no `when()`) for a time already past."""
    import uvloop

    async def main() -> list[str]:
        log: list[str] = []
        now = asyncio.get_running_loop().time()
        shared = deadlines()
        shared.at(now - 1.0, Owner("past", log))
        shared.at(now + 0.01, Owner("soon", log))  # compared with the timer's time
        shared.at(now - 0.5, Owner("past too", log))
        await asyncio.sleep(0.03)
        return log

    assert uvloop.run(main()) == ["past", "past too", "soon"]
