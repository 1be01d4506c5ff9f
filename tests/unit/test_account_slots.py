"""The per-account cap and pace (kiro/accounts/pacing.py, policy.choose) and the wait line
(kiro/accounts/waitline.py): pure rules in tables, the line with real asyncio futures."""

from __future__ import annotations

import asyncio
import math

import pytest

from ki2api.kiro.accounts.pacing import Limits, limits_of, pace_interval, start_wait
from ki2api.kiro.accounts.policy import Candidate, choose
from ki2api.kiro.accounts.waitline import Waitline

NOW = 1_000.0


@pytest.mark.parametrize(
    ("rpm", "interval"),
    [(0, 0.0), (-5, 0.0), (math.inf, 0.0), (math.nan, 0.0), (60, 1.0), (30, 2.0), (600, 0.1)],
)
def test_pace_interval(rpm: float, interval: float) -> None:
    assert pace_interval(rpm) == pytest.approx(interval)


@pytest.mark.parametrize(
    ("own_cap", "own_rpm", "default_cap", "default_rpm", "expected"),
    [
        (None, None, 4, 0.0, Limits(4, 0.0, 0.0)),  # the pool's defaults
        (1, None, 4, 0.0, Limits(1, 0.0, 0.0)),  # its own cap wins
        (0, None, 4, 0.0, Limits(0, 0.0, 0.0)),  # its own 0: no cap, whatever the default
        (None, 30.0, 4, 0.0, Limits(4, 2.0, 30.0)),  # its own pace
        (None, 0.0, 4, 60.0, Limits(4, 0.0, 0.0)),  # its own 0: no pace
        (None, None, 4, 120.0, Limits(4, 0.5, 120.0)),
        (-3, -1.0, 4, 60.0, Limits(0, 0.0, 0.0)),  # negatives count as off
    ],
)
def test_limits_of(
    own_cap: int | None,
    own_rpm: float | None,
    default_cap: int,
    default_rpm: float,
    expected: Limits,
) -> None:
    assert limits_of(own_cap, own_rpm, default_cap, default_rpm) == expected


@pytest.mark.parametrize(
    ("inflight", "last", "limits", "expected"),
    [
        (0, None, Limits(2, 0.0), 0.0),
        (1, None, Limits(2, 0.0), 0.0),
        (2, None, Limits(2, 0.0), None),  # at its cap
        (9, None, Limits(0, 0.0), 0.0),  # no cap
        (0, NOW - 0.5, Limits(0, 2.0), 1.5),  # paced: 1.5 s to go
        (0, NOW - 2.0, Limits(0, 2.0), 0.0),  # exactly due
        (0, NOW - 9.0, Limits(0, 2.0), 0.0),
        (2, NOW - 0.5, Limits(2, 2.0), None),  # the cap first
        (1, NOW - 0.5, Limits(2, 2.0), 1.5),
    ],
)
def test_start_wait(inflight: int, last: float | None, limits: Limits, expected: float) -> None:
    got = start_wait(inflight, last, limits, NOW)
    assert got == (None if expected is None else pytest.approx(expected))


def _c(
    id_: str, inflight: int = 0, cap: int = 0, not_before: float = 0.0, **kw: object
) -> Candidate:
    return Candidate(id=id_, inflight=inflight, cap=cap, not_before=not_before, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("candidates", "sticky", "expected"),
    [
        ([_c("a", 2, 2), _c("b", 1, 2)], None, "b"),  # a at its cap
        ([_c("a", 2, 2), _c("b", 2, 2)], None, None),  # both at their cap
        ([_c("a", 5, 0), _c("b", 6, 0)], None, "a"),  # no cap: the fewest in flight
        ([_c("a", 2, 2), _c("b", 0, 2)], "a", "b"),  # sticky yields to the cap
        ([_c("a", 1, 2), _c("b", 0, 2)], "a", "a"),  # sticky with room stays
        ([_c("a", 0, 2, NOW + 1), _c("b", 1, 2)], None, "b"),  # a not due by its pace
        ([_c("a", 0, 0, NOW + 1)], None, None),  # paced, nothing else
        ([_c("a", 0, 0, NOW)], None, "a"),  # due exactly now
        ([_c("a", 0, 1, cooldown_until=NOW + 5), _c("b", 1, 1)], None, None),  # resting / full
    ],
)
def test_choose_never_picks_an_account_at_its_cap_or_not_due(
    candidates: list[Candidate], sticky: str | None, expected: str | None
) -> None:
    assert choose(candidates, NOW, sticky=sticky) == expected


def test_the_line_is_first_come_first_served() -> None:
    async def run() -> list[int]:
        line = Waitline(10)
        order: list[int] = []

        async def waiter(n: int) -> None:
            ticket = line.join()
            assert await line.wait(ticket, 5.0)
            order.append(n)
            line.leave(ticket, used=True)

        tasks = [asyncio.create_task(waiter(n)) for n in range(5)]
        await asyncio.sleep(0)
        for _ in range(5):
            line.call()  # a freed slot: the first waiter not called yet
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(run()) == [0, 1, 2, 3, 4]


def test_a_call_not_used_passes_on_and_a_leaver_gives_its_call_back() -> None:
    async def run() -> None:
        line = Waitline(2)
        first, second = line.join(), line.join()
        assert line.full()
        line.call()
        assert first.called and not second.called
        line.pass_on(first)  # the slot was not for the first: the second tries
        assert second.called and not first.called
        line.leave(second, used=False)  # gone (a client disconnect) with the call unused
        assert first.called  # the call came back to the one left
        assert not await line.wait(line.join(), 0.01)  # nobody calls: the timeout
        line.leave(first, used=True)
        assert len(line) == 1

    asyncio.run(run())


def test_the_head_leaving_wakes_the_new_head_without_a_turn() -> None:
    async def run() -> None:
        line = Waitline(5)
        head, nxt = line.join(), line.join()
        woken = asyncio.create_task(line.wait(nxt, 5.0))
        await asyncio.sleep(0)
        line.leave(head, used=True)
        assert await asyncio.wait_for(woken, 1.0) is False  # woken at once, not called
        assert line.first(nxt) and not nxt.called

    asyncio.run(run())
