"""UsageLog: batching, flushing and closing against SQLite and Redis alike, and surviving a
failing store (a real SQLite whose table is taken away)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from ki2api.state.base import StateStore, UsageRow
from ki2api.state.sqlite import SQLiteStore
from ki2api.state.usage_log import UsageLog
from tests.support.stores import StoreFactory

LONG = 3600.0  # a flush interval that never elapses within a test


def row(i: int) -> UsageRow:
    return UsageRow(
        at=1_000.0 + i,
        client_key=f"key-{i}",
        account_id="acct-1",
        model="m",
        input_tokens=i,
        output_tokens=1,
        latency_ms=1.0,
        outcome="ok",
    )


@pytest.fixture
def store(store_factory: StoreFactory) -> StateStore:
    s: StateStore = store_factory()
    return s


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore.open(tmp_path / "ki2api.db")
    yield s
    await s.aclose()


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 20.0) -> None:
    """Poll until `check` holds (a generous bound, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not await check():
        assert loop.time() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


async def keys(store: StateStore) -> list[str]:
    return [r.client_key for r in await store.usage_rows(limit=1_000_000)]


def break_usage_table(path: Path, broken: bool) -> None:
    """Make writes to the usage table fail (or work again) from another connection."""
    raw = sqlite3.connect(path)
    try:
        names = ("usage", "usage_off") if broken else ("usage_off", "usage")
        raw.execute(f"ALTER TABLE {names[0]} RENAME TO {names[1]}")
        raw.commit()
    finally:
        raw.close()


@pytest.mark.parametrize("count", [0, 1, 7, 1200], ids=["none", "one", "few", "many"])
async def test_flush_writes_each_row_once(store: StateStore, count: int) -> None:
    log = UsageLog(store, flush_interval_s=LONG)
    for i in range(count):
        log.add(row(i))
    assert log.pending == count
    assert await log.flush()
    assert log.pending == 0
    assert await log.flush()  # nothing left: writes nothing
    assert await keys(store) == [f"key-{i}" for i in range(count)]


async def test_max_batch_wakes_the_flusher(store: StateStore) -> None:
    log = UsageLog(store, flush_interval_s=LONG, max_batch=5)
    log.start()
    try:
        for i in range(4):
            log.add(row(i))
        await asyncio.sleep(0.05)  # let the task run: under max_batch it has nothing to do
        assert await store.usage_count() == 0
        log.add(row(4))

        async def five() -> bool:
            return await store.usage_count() == 5

        await eventually(five)
        assert log.pending == 0
    finally:
        await log.aclose()


async def test_interval_flushes_without_a_full_batch(store: StateStore) -> None:
    log = UsageLog(store, flush_interval_s=0.01, max_batch=1000)
    log.start()
    try:
        log.add(row(0))

        async def one() -> bool:
            return await store.usage_count() == 1

        await eventually(one)
    finally:
        await log.aclose()


async def test_aclose_flushes_the_rest_and_is_idempotent(store: StateStore) -> None:
    log = UsageLog(store, flush_interval_s=LONG, max_batch=1000)
    log.start()
    for i in range(10):
        log.add(row(i))
    await log.aclose()
    assert await store.usage_count() == 10
    await log.aclose()
    log.add(row(10))  # a late row still gets written by the next flush or close
    await log.aclose()
    assert await keys(store) == [f"key-{i}" for i in range(11)]


async def test_exactly_once_under_concurrent_adds_and_flushes(store: StateStore) -> None:
    log = UsageLog(store, flush_interval_s=0.001, max_batch=7)
    log.start()

    async def producer(base: int) -> None:
        for i in range(300):
            log.add(row(base + i))
            if i % 13 == 0:
                await asyncio.sleep(0)
            if i % 50 == 0:
                await log.flush()

    await asyncio.gather(*(producer(k * 1000) for k in range(5)))
    await log.aclose()
    written = await keys(store)
    assert len(written) == 1500
    assert set(written) == {f"key-{k * 1000 + i}" for k in range(5) for i in range(300)}


async def test_cancelled_flush_still_writes_once(store: StateStore) -> None:
    log = UsageLog(store, flush_interval_s=LONG)
    for i in range(50):
        log.add(row(i))
    flushing = asyncio.ensure_future(log.flush())
    await asyncio.sleep(0)  # the write has started
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    await log.aclose()  # waits for the write the cancelled flush started
    assert sorted(await keys(store)) == sorted(f"key-{i}" for i in range(50))


async def test_failed_write_keeps_rows_and_warns_once(
    sqlite_store: StateStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = sqlite_store
    log = UsageLog(store, flush_interval_s=LONG)
    for i in range(3):
        log.add(row(i))
    break_usage_table(store.path, broken=True)
    with caplog.at_level(logging.INFO, logger="ki2api.state.usage_log"):
        assert not await log.flush()
        log.add(row(3))
        assert not await log.flush()
        assert log.pending == 4
        break_usage_table(store.path, broken=False)
        assert await log.flush()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "key-" not in caplog.text
    assert await keys(store) == [f"key-{i}" for i in range(4)]


async def test_background_task_retries_after_failure(sqlite_store: StateStore) -> None:
    store = sqlite_store
    log = UsageLog(store, flush_interval_s=0.01)
    break_usage_table(store.path, broken=True)
    log.start()
    try:
        log.add(row(0))
        await asyncio.sleep(0.05)  # a few failed attempts
        break_usage_table(store.path, broken=False)

        async def written() -> bool:
            return await store.usage_count() == 1

        await eventually(written)
    finally:
        await log.aclose()
    assert await store.usage_count() == 1


async def test_bounded_queue_drops_oldest(
    sqlite_store: StateStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = sqlite_store
    log = UsageLog(store, flush_interval_s=LONG, max_batch=1000, max_pending=5)
    break_usage_table(store.path, broken=True)
    with caplog.at_level(logging.WARNING, logger="ki2api.state.usage_log"):
        for i in range(4):
            log.add(row(i))
        assert not await log.flush()
        for i in range(4, 9):
            log.add(row(i))
    assert (log.pending, log.dropped) == (5, 4)
    drops = [r for r in caplog.records if "dropping" in r.getMessage()]
    assert len(drops) == 1
    break_usage_table(store.path, broken=False)
    await log.aclose()
    assert await keys(store) == [f"key-{i}" for i in range(4, 9)]
