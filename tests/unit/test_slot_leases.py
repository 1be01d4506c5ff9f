"""Slot leases (`StateStore.take_slot`) in SQLite (state/slot_leases.py) and Redis alike: the
cap and the pace hold across connections (two workers), a dead holder's leases stop counting, a
lease not renewed expires; and two `SlotGate`s sharing one store keep one cap between them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Any

import pytest

from ki2api.kiro.accounts.slots import SlotConfig, SlotGate
from ki2api.state.base import AccountRecord, SlotHolder, StateStore
from tests.support.fake_pool import SlotAccount
from tests.support.stores import StoreFactory

HOST = socket.gethostname()
ME = SlotHolder(HOST, os.getpid())


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stores(store_factory: StoreFactory) -> tuple[StateStore, StateStore]:
    return store_factory(), store_factory()


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(proc.stdout)


async def test_the_cap_holds_across_connections(stores: tuple[StateStore, StateStore]) -> None:
    a, b = stores
    kw: dict[str, Any] = {"cap": 2, "interval_s": 0.0, "now": 10.0, "ttl_s": 60.0}
    assert (await a.take_slot("x", "a1", ME, **kw)).taken
    assert (await b.take_slot("x", "b1", ME, **kw)).taken
    refused = await a.take_slot("x", "a2", ME, **kw)
    assert not refused.taken and refused.wait_s is None  # at its cap: no time to give
    assert (await b.take_slot("y", "b2", ME, **kw)).taken  # another account has its own cap
    assert await a.slots_in_use(10.0) == {"x": 2, "y": 1}
    await b.free_slot("x", "b1")
    await b.free_slot("x", "b1")  # twice: nothing happens
    assert (await a.take_slot("x", "a2", ME, **kw)).taken


async def test_the_pace_spreads_starts(stores: tuple[StateStore, StateStore]) -> None:
    a, b = stores
    assert (await a.take_slot("x", "1", ME, cap=0, interval_s=2.0, now=10.0, ttl_s=60)).taken
    early = await b.take_slot("x", "2", ME, cap=0, interval_s=2.0, now=11.5, ttl_s=60)
    assert not early.taken and early.wait_s == pytest.approx(0.5)
    assert (await b.take_slot("x", "2", ME, cap=0, interval_s=2.0, now=12.0, ttl_s=60)).taken


async def test_a_dead_holders_leases_stop_counting(
    stores: tuple[StateStore, StateStore],
) -> None:
    a, b = stores
    dead = SlotHolder(HOST, _dead_pid())
    elsewhere = SlotHolder("another-host", dead.pid)  # not checkable: only its ttl ends it
    assert (await a.take_slot("x", "d1", dead, cap=2, interval_s=0, now=10.0, ttl_s=60)).taken
    assert (await a.take_slot("x", "e1", elsewhere, cap=2, interval_s=0, now=10.0, ttl_s=60)).taken
    assert (await b.take_slot("x", "me", ME, cap=2, interval_s=0, now=10.0, ttl_s=60)).taken
    assert await b.slots_in_use(10.0) == {"x": 2}


async def test_a_lease_not_renewed_expires(stores: tuple[StateStore, StateStore]) -> None:
    a, b = stores
    other = SlotHolder("another-host", 1)
    assert (await a.take_slot("x", "o1", other, cap=1, interval_s=0, now=10.0, ttl_s=5)).taken
    await a.renew_slots(other, 20.0)
    assert not (await b.take_slot("x", "me", ME, cap=1, interval_s=0, now=19.0, ttl_s=5)).taken
    assert await b.slots_in_use(19.0) == {"x": 1}
    assert (await b.take_slot("x", "me", ME, cap=1, interval_s=0, now=20.5, ttl_s=5)).taken


async def test_two_gates_sharing_a_store_keep_one_cap(
    stores: tuple[StateStore, StateStore],
) -> None:
    record = AccountRecord("x", "store", "x", "social", "a" * 64, max_inflight=3)
    config = SlotConfig(max_inflight=1, shared=True)
    one, two = (SlotGate(config, s, clock=Clock()) for s in stores)
    mine, theirs = SlotAccount(record), SlotAccount(record)
    assert [await one.take(mine) for _ in range(2)] == [True, True]  # its own cap: 3
    assert await two.take(theirs) is True
    assert await two.take(theirs) is False  # 3 in flight between the two
    one.free(mine)
    await freed(stores[1], 2)  # the lease goes in a task of its own (a store round trip)
    assert await two.take(theirs) is True
    await two.observe()
    assert two.status(theirs) == {"max_inflight": 3, "pace_rpm": 0.0, "inflight": 3}
    await one.aclose()
    await two.aclose()


async def freed(store: StateStore, left: int) -> None:
    """Until the account holds `left` leases (a bound, not a timing assertion)."""
    import asyncio

    for _ in range(2000):
        if (await store.slots_in_use(Clock()())).get("x") == left:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the freed lease never went")
