"""The store contract (accounts, tokens compare-and-set, health, locks, usage, changed()) against
SQLite and Redis alike (tests/support/stores.py); SQLite's own: file modes, pragmas, reopening."""

from __future__ import annotations

import dataclasses
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from ki2api.state.base import AccountRecord, Health, StateStore, UsageRow
from ki2api.state.sqlite import SCHEMA_VERSION, SQLiteStore
from tests.support.stores import StoreFactory

SECRET = "aoaSECRET-refresh-token-value"


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def account(id_: str = "acct-1", **changes: Any) -> AccountRecord:
    base = AccountRecord(
        id=id_,
        source="store",
        label=f"account {id_}",
        auth_method="social",
        machine_id="a" * 64,
        created_at=100.0,
    )
    return dataclasses.replace(base, **changes)


def usage(i: int, **changes: Any) -> UsageRow:
    base = UsageRow(
        at=1_000.0 + i,
        client_key=f"key-{i}",
        account_id="acct-1",
        model="claude-sonnet-4",
        input_tokens=10 * i,
        output_tokens=i,
        latency_ms=12.5,
        outcome="ok",
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(store_factory: StoreFactory, clock: Clock) -> StateStore:
    s: StateStore = store_factory(clock)
    return s


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_is_a_state_store(store: StateStore) -> None:
    s: StateStore = store  # mypy checks the protocol; the assert keeps the test honest
    assert s is store


# accounts ------------------------------------------------------------------------------------
async def test_account_round_trip_and_listing_order(store: StateStore) -> None:
    full = account(
        "b",
        source="file",
        path="/home/u/.aws/sso/cache/kiro-auth-token.json",
        auth_method="idc",
        priority=3,
        weight=2,
        enabled=False,
        disabled_reason="suspended",
    )
    await store.upsert_account(full)
    await store.upsert_account(account("a"))
    assert await store.get_account("b") == full
    assert [a.id for a in await store.list_accounts()] == ["a", "b"]
    assert await store.get_account("nope") is None


async def test_upsert_keeps_machine_id_and_created_at(store: StateStore) -> None:
    await store.upsert_account(account(machine_id="1" * 64, created_at=5.0))
    changed = account(machine_id="2" * 64, created_at=9.0, label="renamed", priority=7)
    await store.upsert_account(changed)
    got = await store.get_account("acct-1")
    assert got == dataclasses.replace(changed, machine_id="1" * 64, created_at=5.0)


@pytest.mark.parametrize(
    ("enabled", "reason"),
    [(False, "disabled by user"), (True, None), (False, "invalid_grant")],
    ids=["disable", "enable", "invalid-grant"],
)
async def test_set_enabled(store: StateStore, enabled: bool, reason: str | None) -> None:
    await store.upsert_account(account(enabled=not enabled, disabled_reason="before"))
    assert await store.set_enabled("acct-1", enabled, reason)
    got = await store.get_account("acct-1")
    assert got is not None
    assert (got.enabled, got.disabled_reason) == (enabled, reason)
    assert not await store.set_enabled("unknown", enabled, reason)


async def test_remove_account_forgets_tokens_and_health(store: StateStore) -> None:
    await store.upsert_account(account("x"))
    await store.upsert_account(account("keep"))
    for id_ in ("x", "keep"):
        await store.save_tokens(id_, {"refreshToken": SECRET}, expected_version=None)
        await store.put_health(Health(id_, strikes=2))
    assert await store.remove_account("x")
    assert not await store.remove_account("x")
    assert await store.get_account("x") is None
    assert await store.load_tokens("x") is None
    assert set(await store.health()) == {"keep"}
    assert await store.load_tokens("keep") is not None


# tokens --------------------------------------------------------------------------------------
async def test_tokens_cas_sequence(store: StateStore, clock: Clock) -> None:
    assert await store.load_tokens("a") is None
    assert await store.save_tokens("a", {"n": 1}, expected_version=None) == 1
    assert await store.save_tokens("a", {"n": 9}, expected_version=None) is None
    clock.now = 2_000.0
    assert await store.save_tokens("a", {"n": 2}, expected_version=1, synced_mtime_ns=77) == 2
    assert await store.save_tokens("a", {"n": 9}, expected_version=1) is None
    assert await store.save_tokens("a", {"n": 9}, expected_version=5) is None
    got = await store.load_tokens("a")
    assert got is not None
    assert (dict(got.data), got.version, got.synced_mtime_ns, got.updated_at) == (
        {"n": 2},
        2,
        77,
        2_000.0,
    )


@pytest.mark.parametrize(
    "expected",
    [0, 1, -1],
    ids=["zero", "one", "negative"],
)
async def test_tokens_update_without_stored_tokens_is_a_conflict(
    store: StateStore, expected: int
) -> None:
    assert await store.save_tokens("a", {"n": 1}, expected_version=expected) is None
    assert await store.load_tokens("a") is None


async def test_tokens_keep_nested_json_and_unicode(store: StateStore) -> None:
    data = {
        "accessToken": "aoa" + "x" * 2000,
        "refreshToken": SECRET,
        "expiresAt": "2030-01-01T00:00:00.000Z",
        "nested": {"list": [1, 2.5, None, True], "ü": "ß"},
    }
    await store.save_tokens("a", data, expected_version=None)
    got = await store.load_tokens("a")
    assert got is not None and dict(got.data) == data
    assert SECRET not in repr(got)
    assert SECRET not in repr(store)


async def test_concurrent_saves_have_one_winner(store_factory: StoreFactory) -> None:
    import asyncio

    stores = [store_factory() for _ in range(3)]
    await stores[0].save_tokens("a", {"n": 0}, expected_version=None)
    saved = await asyncio.gather(
        *(s.save_tokens("a", {"n": i}, expected_version=1) for i, s in enumerate(stores * 4))
    )
    assert [v for v in saved if v is not None] == [2]  # one of twelve writers
    got = await stores[1].load_tokens("a")
    assert got is not None and got.version == 2


# health --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "health",
    [
        Health("a"),
        Health(
            "a",
            cooldown_until=1234.5,
            reason="quota",
            strikes=4,
            quota_remaining=12.0,
            quota_limit=50.0,
            quota_reset_at=99_999.0,
            quota_checked_at=1_000.0,
            last_error="MONTHLY_REQUEST_COUNT",
            last_ok_at=900.0,
        ),
    ],
    ids=["defaults", "every-field"],
)
async def test_health_round_trip(store: StateStore, health: Health) -> None:
    await store.put_health(Health("a", strikes=9, reason="before"))
    await store.put_health(health)
    await store.put_health(Health("b"))
    assert await store.health() == {"a": health, "b": Health("b")}


# locks ---------------------------------------------------------------------------------------
# (step, who, ttl or None for unlock, clock advance before the step, expected try_lock result)
LOCK_CASES = {
    "free": [("w1", 10.0, 0.0, True)],
    "held-by-other": [("w1", 10.0, 0.0, True), ("w2", 10.0, 5.0, False)],
    "expired": [("w1", 10.0, 0.0, True), ("w2", 10.0, 10.5, True), ("w1", 10.0, 0.0, False)],
    "exactly-at-expiry-still-held": [("w1", 10.0, 0.0, True), ("w2", 10.0, 10.0, False)],
    "own-extends": [
        ("w1", 10.0, 0.0, True),
        ("w1", 10.0, 8.0, True),
        ("w2", 10.0, 8.0, False),  # 16 s after the start: the extension still holds
        ("w2", 10.0, 2.5, True),
    ],
    "unlock-frees": [("w1", 10.0, 0.0, True), ("w1", None, 0.0, None), ("w2", 10.0, 0.0, True)],
    "unlock-by-other-ignored": [
        ("w1", 10.0, 0.0, True),
        ("w2", None, 0.0, None),
        ("w2", 10.0, 0.0, False),
    ],
}


@pytest.mark.parametrize("steps", list(LOCK_CASES.values()), ids=list(LOCK_CASES))
async def test_locks(
    store: StateStore, clock: Clock, steps: list[tuple[str, float | None, float, bool | None]]
) -> None:
    for owner, ttl, advance, expected in steps:
        clock.now += advance
        if ttl is None:
            await store.unlock("refresh:acct-1", owner)
        else:
            assert await store.try_lock("refresh:acct-1", owner, ttl) is expected


async def test_locks_are_independent_by_name(store: StateStore) -> None:
    assert await store.try_lock("refresh:a", "w1", 10.0)
    assert await store.try_lock("refresh:b", "w2", 10.0)
    assert not await store.try_lock("refresh:a", "w2", 10.0)


# usage ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("written", "limit", "expected_keys"),
    [
        (0, 100, []),
        (3, 100, ["key-0", "key-1", "key-2"]),
        (5, 2, ["key-3", "key-4"]),
        (5, 5, ["key-0", "key-1", "key-2", "key-3", "key-4"]),
    ],
    ids=["empty", "all", "newest-two-oldest-first", "exact"],
)
async def test_usage_count_and_rows(
    store: StateStore, written: int, limit: int, expected_keys: list[str]
) -> None:
    await store.record_usage([usage(i) for i in range(written)])
    await store.record_usage([])
    assert await store.usage_count() == written
    rows = await store.usage_rows(limit=limit)
    assert [r.client_key for r in rows] == expected_keys


async def test_usage_row_round_trip(store: StateStore) -> None:
    rows = [
        usage(1, endpoint="/v1/messages", stream=True, attempts=3, outcome="rate_limited"),
        usage(2, account_id=None, model=None, input_tokens=None, output_tokens=None),
    ]
    await store.record_usage(rows)
    assert await store.usage_rows() == rows


# files and persistence -----------------------------------------------------------------------
def test_file_modes(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "ki2api.db"
    s = SQLiteStore.open(path)
    try:
        assert mode(path.parent) == 0o700
        for name in ("ki2api.db", "ki2api.db-wal", "ki2api.db-shm"):
            assert mode(path.parent / name) == 0o600, name
    finally:
        s.close()


def test_existing_wal_companions_are_made_private(tmp_path: Path) -> None:
    path = tmp_path / "ki2api.db"
    first = SQLiteStore.open(path)
    for name in ("ki2api.db", "ki2api.db-wal", "ki2api.db-shm"):
        (tmp_path / name).chmod(0o644)
    second = SQLiteStore.open(path)
    try:
        for name in ("ki2api.db", "ki2api.db-wal", "ki2api.db-shm"):
            assert mode(tmp_path / name) == 0o600, name
    finally:
        first.close()
        second.close()


def test_pragmas_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "ki2api.db"
    SQLiteStore.open(path).close()
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    finally:
        raw.close()


async def test_reopen_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "ki2api.db"
    first = SQLiteStore.open(path)
    await first.upsert_account(account())
    await first.save_tokens("acct-1", {"refreshToken": SECRET}, expected_version=None)
    await first.put_health(Health("acct-1", strikes=2, reason="throttled"))
    assert await first.try_lock("refresh:acct-1", "w1", 60.0)
    await first.record_usage([usage(1), usage(2)])
    await first.aclose()
    await first.aclose()  # idempotent

    second = SQLiteStore.open(path)
    try:
        assert second.integrity_ok()
        assert await second.list_accounts() == [account()]
        tokens = await second.load_tokens("acct-1")
        assert tokens is not None and (dict(tokens.data), tokens.version) == (
            {"refreshToken": SECRET},
            1,
        )
        assert (await second.health())["acct-1"].strikes == 2
        assert not await second.try_lock("refresh:acct-1", "w2", 60.0)
        assert await second.usage_rows() == [usage(1), usage(2)]
    finally:
        second.close()


async def test_changed_sees_other_connections_only(store_factory: StoreFactory) -> None:
    a, b = store_factory(), store_factory()
    assert await a.changed()  # the first call
    assert not await a.changed()
    await a.put_health(Health("x"))  # its own write
    assert not await a.changed()
    await b.put_health(Health("y"))
    assert await a.changed()
    assert not await a.changed()
    assert await b.changed()  # b's first call
    await a.save_tokens("x", {"n": 1}, expected_version=None)
    assert await b.changed()


def test_repr_hides_tokens(tmp_path: Path) -> None:
    s = SQLiteStore.open(tmp_path / "ki2api.db")
    try:
        assert repr(s).startswith("SQLiteStore(path=")
    finally:
        s.close()
    assert "closed" in repr(s)
