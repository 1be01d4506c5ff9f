"""What only the Redis store has (the contract it shares with SQLite is tested on both): key
prefixes keep deployments apart, a lock's key expires by itself, the usage stream is capped,
only writes of accounts, tokens and health move `changed()`, a server away is a RedisError, and a
usage batch written again after a lost reply is not recorded twice."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import cast

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from ki2api.state.base import AccountRecord, Health, SlotHolder, StateStore, UsageRow
from ki2api.state.redis_store import RedisStore
from ki2api.state.usage_log import UsageLog
from tests.support.stores import StoreFactory, unique_prefix

ACCOUNT = AccountRecord("a", "store", "a", "social", "0" * 64)


@pytest.fixture
async def redis_factory(redis_server: str, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    factory = StoreFactory("redis", tmp_path / "unused.db", unique_prefix(redis_server))
    try:
        yield factory
    finally:
        await factory.aclose()


async def test_prefixes_keep_deployments_apart(redis_factory: StoreFactory) -> None:
    assert redis_factory.redis_url is not None
    mine = redis_factory()
    theirs = RedisStore.open(redis_factory.redis_url.replace("?prefix=", "?prefix=other-"))
    try:
        await mine.upsert_account(ACCOUNT)
        await mine.record_usage([UsageRow(1.0, "key-1", "a", "m", 1, 1, 1.0, "ok")])
        assert await theirs.list_accounts() == []
        assert await theirs.usage_count() == 0
        assert await theirs.try_lock("refresh:a", "w2", 10.0)
        assert await mine.try_lock("refresh:a", "w1", 10.0)
    finally:
        await theirs.aclose()


async def test_a_lock_key_expires_by_itself(redis_factory: StoreFactory) -> None:
    store = redis_factory()
    assert await store.try_lock("refresh:a", "w1", 30.0)
    ttl_ms = await store._r.pttl(store._k("lock", "refresh:a"))
    assert 25_000 < ttl_ms <= 30_000  # a replica killed while holding it frees it in time


async def test_the_usage_stream_is_capped(redis_factory: StoreFactory) -> None:
    store = RedisStore.open(redis_factory.redis_url or "", usage_max_rows=50)
    try:
        for batch in range(10):
            rows = [
                UsageRow(batch * 100.0 + i, "key-1", "a", "m", 1, 1, 1.0, "ok") for i in range(100)
            ]
            await store.record_usage(rows)
        assert 50 <= await store.usage_count() <= 250  # MAXLEN ~: whole nodes of 100 go
        newest = await store.usage_rows(limit=2)
        assert [r.at for r in newest] == [998.0, 999.0]
    finally:
        await store.aclose()


async def test_only_pool_state_moves_changed(redis_factory: StoreFactory) -> None:
    a, b = redis_factory(), redis_factory()
    assert await a.changed()
    me = SlotHolder("h", 1)
    await b.take_slot("a", "l1", me, cap=1, interval_s=0, now=1.0, ttl_s=60)
    await b.record_usage([UsageRow(1.0, "key-1", "a", "m", 1, 1, 1.0, "ok")])
    await b.put_response("r", b"x", 10.0**10)
    assert not await a.changed()  # leases, usage, responses: no reload for the pool
    await b.put_health(Health("a", strikes=1))
    assert await a.changed()
    await b.upsert_account(ACCOUNT)
    assert await a.changed()
    await b.set_enabled("a", False, "off")
    assert await a.changed()


async def test_a_server_away_is_a_redis_error() -> None:
    store = RedisStore.open("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(RedisConnectionError):
            await store.list_accounts()
    finally:
        await store.aclose()


def _rows(first: int, n: int) -> list[UsageRow]:
    return [UsageRow(1000.0 + i, "key-1", "a", "m", i, 1, 1.0, "ok") for i in range(first, n)]


async def test_a_batch_written_again_is_recorded_once(redis_factory: StoreFactory) -> None:
    store = redis_factory()
    await store.record_usage(_rows(0, 3), batch="b1")
    await store.record_usage(_rows(0, 3), batch="b1", again=True)  # it was done: nothing
    assert await store.usage_count() == 3
    await store.record_usage(_rows(3, 5), batch="b2", again=True)  # it was not: written
    await store.record_usage(_rows(5, 6), batch="b1")  # a first write is never looked up
    assert [r.input_tokens for r in await store.usage_rows(limit=100)] == [0, 1, 2, 3, 4, 5]


class _LostReply:
    """A real store whose first `record_usage` is done but reported failed: the connection
    to Redis lost on the way back."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.calls: list[tuple[str | None, bool, int]] = []

    async def record_usage(
        self, rows: Sequence[UsageRow], *, batch: str | None = None, again: bool = False
    ) -> None:
        self.calls.append((batch, again, len(rows)))
        await self.store.record_usage(rows, batch=batch, again=again)
        if len(self.calls) == 1:
            raise RedisConnectionError("Connection closed by server.")


async def test_a_usage_write_whose_reply_was_lost_is_not_recorded_twice(
    redis_factory: StoreFactory,
) -> None:
    store = redis_factory()
    lossy = _LostReply(store)
    log = UsageLog(cast(StateStore, lossy), flush_interval_s=3600)
    for r in _rows(0, 3):
        log.add(r)
    assert not await log.flush()  # done in Redis, but this gateway cannot know
    assert log.pending == 3
    for r in _rows(3, 5):
        log.add(r)
    assert await log.flush()
    assert await store.usage_count() == 5
    assert [r.input_tokens for r in await store.usage_rows(limit=100)] == [0, 1, 2, 3, 4]
    (first, _, _), (again, was_again, size), (new, _, _) = lossy.calls
    assert (again, was_again, size) == (first, True, 3)  # the same batch, as it was, first
    assert new not in (None, first)
