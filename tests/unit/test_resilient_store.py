"""ResilientStore against a real redis-server that the test stops (SIGKILL) and starts again on
the same port, with its data on disk (tests/support/redis_proc.py): while it is away, reads
answer the last values, writes wait in memory, a lock or a slot lease says `StoreAway`, a key's
admission lets the request in; when it is back, the kept tokens are written compare-and-set
and never over newer ones, and `changed()` says True once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ki2api.kiro.accounts.slots import SlotConfig, SlotGate
from ki2api.kiro.login.credentials import CredentialSource, KiroCredentials
from ki2api.kiro.login.token_home import StoreTokenHome
from ki2api.state.base import AccountRecord, ClientKeyRecord, Health, SlotHolder
from ki2api.state.client_key_rules import hash_key, key_hint, new_key
from ki2api.state.redis_store import RedisStore
from ki2api.state.resilient_store import ResilientStore
from ki2api.state.store_status import StoreAway, StoreStatus, store_view
from tests.support.fake_pool import SlotAccount
from tests.support.redis_proc import RedisProc, own_redis
from tests.unit.test_credentials import Clock, FakeKiroAuth, base_settings, social_file


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[RedisProc]:
    """A redis-server of this test's own, to stop and start (its data on disk)."""
    with own_redis(tmp_path / "redis-own") as server:
        yield server


HOLDER = SlotHolder("here", 1)


def _tokens(hours: float, name: str) -> dict[str, Any]:
    expires = datetime.now(UTC) + timedelta(hours=hours)
    return {"accessToken": name, "refreshToken": f"r-{name}", "expiresAt": expires.isoformat()}


def _stores(server: RedisProc) -> tuple[ResilientStore, RedisStore]:
    """The wrapper (no probe: the test calls `recover`) and a plain store on the same keys."""
    url = f"{server.url}?prefix=t{uuid.uuid4().hex[:10]}:"
    return ResilientStore(RedisStore.open(url), probe_s=0), RedisStore.open(url)


async def test_reads_answer_what_was_known_and_writes_wait_for_the_server(
    redis_proc: RedisProc,
) -> None:
    store, other = _stores(redis_proc)
    try:
        record = AccountRecord("a1", "store", "test", "social", "0" * 64)
        await store.upsert_account(record)
        assert await store.save_tokens("a1", _tokens(1, "t1"), expected_version=None) == 1
        await store.put_health(Health("a1", strikes=1))
        assert await store.changed()
        assert [r.id for r in await store.list_accounts()] == ["a1"]
        assert (await store.health())["a1"].strikes == 1
        assert not await store.changed()

        redis_proc.stop()
        assert await store.list_accounts() == [record]  # the last value read
        assert store_view(store)["ok"] is False and store.status.errors == 1
        assert (await store.load_tokens("a1")).version == 1  # type: ignore[union-attr]
        assert not await store.changed()
        await store.put_health(Health("a1", strikes=2))  # kept here, not written
        assert (await store.health())["a1"].strikes == 2
        assert await store.set_enabled("a1", False, "suspended")
        assert not (await store.get_account("a1")).enabled  # type: ignore[union-attr]
        assert (await store.admit_client_key("ck-x", 0.0)).ok  # fail open
        with pytest.raises(StoreAway):
            await store.try_lock("refresh:a1", "me", 10)
        with pytest.raises(StoreAway):
            await store.take_slot("a1", "l1", HOLDER, cap=1, interval_s=0, now=1, ttl_s=60)
        await store.free_slot("a1", "l1")  # its time-to-live frees it
        await store.unlock("refresh:a1", "me")
        await store.put_response("resp_1", b"kept", 4e9)
        assert await store.get_response("resp_1", 1.0) == b"kept"
        # a compare-and-set save against what is known: the stale one is refused
        assert await store.save_tokens("a1", _tokens(1, "x"), expected_version=0) is None
        assert await store.save_tokens("a1", _tokens(2, "t2"), expected_version=1) == 2
        assert await store.save_tokens("a1", _tokens(3, "t3"), expected_version=2) == 3
        assert not await store.recover()

        redis_proc.start()
        assert await store.recover()
        assert store_view(store)["ok"] is True
        assert await store.changed()  # reload everything, once
        assert not await store.changed()
        saved = await other.load_tokens("a1")
        assert saved is not None and saved.data["accessToken"] == "t3"
        assert saved.version == 2  # one write on the version the first kept save followed
        assert not (await other.get_account("a1")).enabled  # type: ignore[union-attr]
        assert await other.get_response("resp_1", 1.0) == b"kept"
        assert (await other.health())["a1"].strikes == 1  # health waited for nobody
        assert await store.try_lock("refresh:a1", "me", 10)
    finally:
        await store.aclose()
        await other.aclose()


@pytest.mark.parametrize(
    ("theirs_hours", "kept"),
    [
        (1.0, "mine"),  # saved elsewhere meanwhile, but older: ours (newer) goes over it
        (3.0, "theirs"),  # saved elsewhere and newer: never overwritten with an older one
    ],
)
async def test_tokens_kept_during_an_outage_never_go_over_newer_ones(
    redis_proc: RedisProc, theirs_hours: float, kept: str
) -> None:
    store, other = _stores(redis_proc)
    try:
        assert await store.save_tokens("a1", _tokens(0.5, "first"), expected_version=None) == 1
        redis_proc.stop()
        assert await store.save_tokens("a1", _tokens(2, "mine"), expected_version=1) == 2
        redis_proc.start()
        assert await other.save_tokens("a1", _tokens(theirs_hours, "theirs"), expected_version=1)
        assert await store.recover()
        saved = await other.load_tokens("a1")
        assert saved is not None and saved.data["accessToken"] == kept
        assert saved.version == (3 if kept == "mine" else 2)
        assert (await store.load_tokens("a1")) == saved
    finally:
        await store.aclose()
        await other.aclose()


async def test_the_store_reports_an_outage_once_and_counts_every_failed_call() -> None:
    now = [100.0]
    status = StoreStatus("redis", clock=lambda: now[0])
    assert status.failed("tokens") is True
    now[0] = 103.0
    assert status.failed("health") is False
    assert status.view() == {
        "kind": "redis",
        "ok": False,
        "since": 100.0,
        "errors": 2,
        "last_error_at": 103.0,
    }
    now[0] = 110.0
    assert status.recovered() == 10.0
    assert status.ok and status.since == 110.0
    assert status.recovered() == 0.0
    assert store_view(object()) == {"kind": "sqlite", "ok": True}


async def test_the_slot_gate_counts_locally_while_the_store_is_away(
    redis_proc: RedisProc, caplog: pytest.LogCaptureFixture
) -> None:
    store, plain = _stores(redis_proc)
    record = AccountRecord("x", "store", "x", "social", "a" * 64, max_inflight=2)
    gate = SlotGate(SlotConfig(shared=True), store)
    bare = SlotGate(SlotConfig(shared=True), plain)  # without the wrapper
    account = SlotAccount(record)
    try:
        assert await gate.take(account) and await bare.take(account)
        redis_proc.stop()
        bare.free(account)  # its lease's store call fails: logged, never an unretrieved error
        gate.free(account)
        await asyncio.gather(*gate._tasks, *bare._tasks)
        assert "freeing a slot lease failed" in caplog.text
        assert await gate.take(account) is True  # this process's own count: 0 of 2
        account.inflight = 2
        assert await gate.take(account) is False  # 2 of 2
        account.inflight = 0
        gate.free(account)
        await asyncio.gather(*gate._tasks)
        redis_proc.start()
        assert await store.recover()
        # the wrapper's lease freed during the outage is freed now; the bare gate's is left
        assert await plain.slots_in_use(0.0) == {"x": 1}
    finally:
        await gate.aclose()
        await bare.aclose()
        await store.aclose()
        await plain.aclose()


@pytest.mark.parametrize(
    ("case", "refreshed"),
    [
        ("ahead", False),  # still valid, due for a refresh ahead of expiry: waits for the store
        ("expired", True),  # expired: refreshed without the shared lock
        ("refused", True),  # Kiro refused it (a forced refresh): refreshed too
    ],
)
async def test_a_refresh_while_the_store_is_away_happens_only_when_it_must(
    redis_proc: RedisProc, tmp_path: Path, case: str, refreshed: bool
) -> None:
    upstream = FakeKiroAuth()
    store, plain = _stores(redis_proc)
    clock = Clock()
    await store.upsert_account(AccountRecord("a", "store", "a", "social", "1" * 64))
    assert await store.save_tokens("a", social_file(), expected_version=None) == 1
    home = StoreTokenHome(store, "a", default_region="us-east-1")
    source = CredentialSource("store", None, "a")
    async with httpx.AsyncClient(transport=httpx.MockTransport(upstream.handler)) as http:
        settings = base_settings(tmp_path)
        creds = KiroCredentials(
            source, settings, http, clock=clock, account_id="a", home=home, locks=store
        )
        await creds.load()
        redis_proc.stop()
        if case == "expired":
            clock.advance(600)
        if case == "refused":
            got = await creds.refresh(stale="aoa-0")
        else:
            got = await creds.current()
        assert got.access_token == ("aoa-1" if refreshed else "aoa-0")
        assert upstream.refreshes == int(refreshed)
        redis_proc.start()
        assert await store.recover()
    saved = await plain.load_tokens("a")
    assert saved is not None
    want = (2, "aoa-1") if refreshed else (1, "aoa-0")
    assert (saved.version, saved.data["accessToken"]) == want
    await store.aclose()
    await plain.aclose()


async def test_a_key_is_let_in_within_its_requests_per_minute_while_the_store_is_away(
    redis_proc: RedisProc,
) -> None:
    store, other = _stores(redis_proc)
    key = new_key()
    record = ClientKeyRecord("ck-1", "bot", hash_key(key), key_hint(key), rpm=2)
    assert await other.create_client_key(record)
    assert await store.client_key_by_hash(hash_key(key)) == record  # the door read it
    minute = 60.0 * 29_000_000
    redis_proc.stop()
    try:
        verdicts = [await store.admit_client_key("ck-1", minute + i) for i in range(3)]
        assert [v.ok for v in verdicts] == [True, True, False]
        assert verdicts[2].kind == "rate" and verdicts[2].retry_after == 58.0
        assert (await store.admit_client_key("ck-1", minute + 60)).ok  # the next minute
        assert (await store.admit_client_key("ck-unknown", minute)).ok  # never read: let in
    finally:
        await store.aclose()
        await other.aclose()
