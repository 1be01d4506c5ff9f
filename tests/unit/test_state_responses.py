"""Stored responses in SQLite and Redis alike: put / get / delete, expiry, replacement, two
connections; SQLite's own: the sweep of expired rows, a store of the previous schema version
gaining the table."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ki2api.state.base import StateStore
from ki2api.state.sqlite import _MIGRATIONS, SCHEMA_VERSION, SQLiteStore
from tests.support.stores import StoreFactory


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(store_factory: StoreFactory, clock: Clock) -> StateStore:
    s: StateStore = store_factory(clock)
    return s


@pytest.fixture
async def sqlite_store(tmp_path: Path, clock: Clock) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore.open(tmp_path / "ki2api.db", clock=clock)
    yield s
    await s.aclose()


async def test_round_trip_and_replace(store: StateStore) -> None:
    assert await store.get_response("resp_1", 1_000.0) is None
    await store.put_response("resp_1", b'{"a": 1}', 2_000.0)
    assert await store.get_response("resp_1", 1_000.0) == b'{"a": 1}'
    await store.put_response("resp_1", b"\x00binary\xff", 3_000.0)
    assert await store.get_response("resp_1", 2_500.0) == b"\x00binary\xff"
    assert await store.get_response("resp_2", 1_000.0) is None


@pytest.mark.parametrize(
    ("now", "found"),
    [(1_999.9, True), (2_000.0, False), (5_000.0, False)],
)
async def test_expired_records_are_never_returned(
    store: StateStore, now: float, found: bool
) -> None:
    await store.put_response("resp_1", b"x", 2_000.0)
    assert (await store.get_response("resp_1", now) is not None) is found


async def test_delete(store: StateStore, clock: Clock) -> None:
    await store.put_response("resp_1", b"x", 2_000.0)
    assert await store.delete_response("resp_1")
    assert await store.get_response("resp_1", 1_000.0) is None
    assert not await store.delete_response("resp_1")
    assert not await store.delete_response("never")
    await store.put_response("resp_2", b"x", 1_500.0)
    clock.now = 1_600.0  # expired: deleting it reports nothing deleted
    assert not await store.delete_response("resp_2")


async def test_put_sweeps_expired_rows(
    sqlite_store: StateStore, clock: Clock, tmp_path: Path
) -> None:
    store = sqlite_store
    await store.put_response("old", b"x", 1_100.0)
    await store.put_response("young", b"y", 9_000.0)
    clock.now = 1_200.0
    await store.put_response("new", b"z", 9_000.0)
    raw = sqlite3.connect(tmp_path / "ki2api.db")
    try:
        ids = sorted(r[0] for r in raw.execute("SELECT id FROM responses"))
    finally:
        raw.close()
    assert ids == ["new", "young"]


async def test_shared_between_two_store_objects(store_factory: StoreFactory) -> None:
    first, second = store_factory(), store_factory()
    await first.put_response("resp_1", b"shared", 10.0**12)
    assert await second.get_response("resp_1", 1_000.0) == b"shared"
    assert await second.delete_response("resp_1")
    assert await first.get_response("resp_1", 1_000.0) is None


async def test_an_older_store_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / "ki2api.db"
    # a store of the schema version just before the responses table (later steps may follow it)
    step = next(i for i, st in enumerate(_MIGRATIONS) if "CREATE TABLE responses" in st[0])
    assert step < SCHEMA_VERSION
    raw = sqlite3.connect(path)
    for statements in _MIGRATIONS[:step]:
        for statement in statements:
            raw.execute(statement)
    raw.execute(f"PRAGMA user_version = {step}")
    raw.commit()
    raw.close()
    store = SQLiteStore.open(path)
    try:
        await store.put_response("resp_1", b"x", 10.0**12)
        assert await store.get_response("resp_1", 0.0) == b"x"
    finally:
        await store.aclose()
