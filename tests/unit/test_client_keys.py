"""Client keys' pure rules (state/client_key_rules.py) table-driven, and the SQLite store's
records and counters across two connections (two workers), in SQLite (state/client_key_sql.py)
and Redis (state/redis_keys.py) alike."""

from __future__ import annotations

import calendar
import re

import pytest

from ki2api.cli.keys_commands import parse_expiry
from ki2api.state.base import ClientKeyRecord, StateStore, UsageRow
from ki2api.state.client_key_rules import (
    Counter,
    Limits,
    check_name,
    decide,
    hash_key,
    key_hint,
    model_allowed,
    new_key,
    parse_models,
    window_end,
    window_of,
)
from tests.support.stores import StoreFactory

T0 = calendar.timegm((2026, 1, 31, 23, 59, 30))  # 30 s before February (and a new day)


def test_key_format_and_hash() -> None:
    keys = {new_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert re.fullmatch(r"sk-ki2api-[A-Za-z0-9_-]{43}", key)
        assert re.fullmatch(r"[0-9a-f]{64}", hash_key(key))
        assert hash_key(key) == hash_key(key.encode())
        assert key_hint(key) == "sk-ki2api-…" + key[-4:]
        assert key[10:-4] not in key_hint(key)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("alice", True),
        ("ci-bot_2.prod", True),
        ("me@team", True),
        ("", False),
        ("-dash", False),
        ("has space", False),
        ("x" * 65, False),
        ("key-1", False),  # the usage log's name of API_KEY's first key
        ("KEY-12", False),
        ("none", False),
        ("invalid", False),
        ("key-a", True),
    ],
)
def test_names(name: str, ok: bool) -> None:
    assert (check_name(name) is None) is ok


@pytest.mark.parametrize(
    ("patterns", "names", "allowed"),
    [
        ("", ("anything",), True),
        ("claude-sonnet-*", ("claude-sonnet-4.5",), True),
        ("claude-sonnet-*", ("claude-haiku-4.5",), False),
        ("claude-sonnet-*", ("sonnet", "claude-sonnet-4.5"), True),  # requested or its id
        ("claude-haiku-*, gpt-4?", ("gpt-4o",), True),
        ("claude-haiku-*, gpt-4?", ("gpt-4o-mini",), False),
        ("Claude-*", ("CLAUDE-OPUS-4",), True),  # case-insensitive
        ("claude-[os]*", ("claude-opus-4",), True),
        ("claude-[os]*", ("claude-haiku-4",), False),
    ],
)
def test_model_patterns(patterns: str, names: tuple[str, ...], allowed: bool) -> None:
    assert model_allowed(parse_models(patterns), *names) is allowed


@pytest.mark.parametrize(
    ("period", "now", "end"),
    [
        ("minute", T0, T0 + 30),
        ("minute", T0 + 30, T0 + 90),  # the first second of a window is in it
        ("day", T0, T0 + 30),
        ("day", T0 + 31, T0 + 30 + 86400),
        ("month", T0, T0 + 30),  # January ends
        ("month", T0 + 30, calendar.timegm((2026, 3, 1, 0, 0, 0))),
        ("month", calendar.timegm((2026, 12, 15, 0, 0, 0)), calendar.timegm((2027, 1, 1, 0, 0, 0))),
    ],
)
def test_windows(period: str, now: float, end: float) -> None:
    assert window_end(period, window_of(period, now)) == end
    assert window_of(period, end) == window_of(period, now) + 1


_M, _D, _MO = window_of("minute", T0), window_of("day", T0), window_of("month", T0)


@pytest.mark.parametrize(
    ("limits", "counters", "kind", "retry_after"),
    [
        (Limits(), {"minute": Counter(_M, 10**6, 10**9)}, None, None),
        (Limits(rpm=3), {"minute": Counter(_M, 2)}, None, None),
        (Limits(rpm=3), {"minute": Counter(_M, 3)}, "rate", 30),
        (Limits(rpm=3), {"minute": Counter(_M - 1, 99)}, None, None),  # an older window
        (Limits(tpm=100), {"minute": Counter(_M, 1, 100)}, "rate", 30),
        (Limits(tpm=100), {"minute": Counter(_M, 1, 99)}, None, None),
        (Limits(daily_tokens=50), {"day": Counter(_D, 1, 50)}, "quota", 30),
        (Limits(daily_tokens=50), {"day": Counter(_D - 1, 1, 500)}, None, None),
        (Limits(monthly_requests=9), {"month": Counter(_MO, 9)}, "quota", 30),
        # a rate limit is reported before a budget (it passes sooner)
        (
            Limits(rpm=1, monthly_requests=1),
            {"minute": Counter(_M, 1), "month": Counter(_MO, 1)},
            "rate",
            30,
        ),
    ],
)
def test_decide(
    limits: Limits, counters: dict[str, Counter], kind: str | None, retry_after: float | None
) -> None:
    verdict = decide(limits, counters, T0)
    assert verdict.ok is (kind is None)
    assert verdict.kind == kind
    assert verdict.retry_after == retry_after


@pytest.mark.parametrize(
    ("text", "at"),
    [
        ("2027-01-31", calendar.timegm((2027, 1, 31, 0, 0, 0))),
        ("2027-01-31T12:00:00", calendar.timegm((2027, 1, 31, 12, 0, 0))),
        ("2027-01-31T12:00:00+02:00", calendar.timegm((2027, 1, 31, 10, 0, 0))),
    ],
)
def test_expiry(text: str, at: float) -> None:
    assert parse_expiry(text) == at


@pytest.fixture
def stores(store_factory: StoreFactory) -> tuple[StateStore, StateStore]:
    return store_factory(), store_factory()


def _record(name: str = "alice", **limits: object) -> tuple[str, ClientKeyRecord]:
    key = new_key()
    record = ClientKeyRecord(
        id="ck-" + name, name=name, key_hash=hash_key(key), hint=key_hint(key), **limits
    )  # type: ignore[arg-type]
    return key, record


async def test_store_records(stores: tuple[StateStore, StateStore]) -> None:
    a, b = stores
    key, record = _record(rpm=5)
    assert await a.create_client_key(record)
    assert not await a.create_client_key(record)  # the name stays taken
    assert await b.client_key_by_hash(hash_key(key)) == record
    assert "key_hash" not in repr(record)
    assert await b.set_client_key_state("alice", "disabled")
    found = await a.get_client_key("alice")
    assert found is not None and found.state == "disabled"
    assert await a.rotate_client_key("alice", "f" * 64, "sk-ki2api-…ffff")
    assert await a.client_key_by_hash(hash_key(key)) is None
    assert await a.set_client_key_state("alice", "revoked")
    assert not await a.set_client_key_state("alice", "active")  # revoked for good
    assert not await a.rotate_client_key("alice", "e" * 64, "x")
    assert [r.name for r in await b.list_client_keys()] == ["alice"]


async def test_admission_counts_across_connections(
    stores: tuple[StateStore, StateStore],
) -> None:
    a, b = stores
    _, record = _record(rpm=3, tpm=100, expires_at=T0 + 3600)
    await a.create_client_key(record)
    verdicts = [await (a if i % 2 else b).admit_client_key(record.id, T0) for i in range(4)]
    assert [v.ok for v in verdicts] == [True, True, True, False]
    assert verdicts[-1].kind == "rate" and verdicts[-1].retry_after == 30
    assert (await a.admit_client_key(record.id, T0 + 30)).ok  # a new minute
    usage = UsageRow(T0 + 31, "alice", None, None, 60, 40, 5.0, "ok")
    other = UsageRow(T0 + 31, "key-1", None, None, 10**6, 0, 5.0, "ok")
    await b.record_usage([usage, other])
    refused = await a.admit_client_key(record.id, T0 + 32)
    assert refused.kind == "rate" and "tokens per minute" in refused.reason
    expired = await a.admit_client_key(record.id, T0 + 3600)
    assert expired.kind == "denied" and "expired" in expired.reason
    await b.set_client_key_state("alice", "disabled")
    assert (await a.admit_client_key(record.id, T0 + 90)).kind == "denied"
    assert (await a.admit_client_key("ck-none", T0)).kind == "denied"


async def test_budgets(stores: tuple[StateStore, StateStore]) -> None:
    a, _ = stores
    _, record = _record(daily_tokens=100, monthly_requests=2)
    await a.create_client_key(record)
    assert (await a.admit_client_key(record.id, T0)).ok
    await a.record_usage([UsageRow(T0, "alice", None, None, 100, 0, 1.0, "ok")])
    spent = await a.admit_client_key(record.id, T0 + 1)
    assert spent.kind == "quota" and spent.retry_after == 29
    assert (await a.admit_client_key(record.id, T0 + 30)).ok  # a new day (and month)
    assert (await a.admit_client_key(record.id, T0 + 31)).ok
    month = await a.admit_client_key(record.id, T0 + 32)
    assert month.kind == "quota" and "monthly" in month.reason


async def test_concurrent_admissions_count_exactly_once(
    stores: tuple[StateStore, StateStore],
) -> None:
    """Two workers (or replicas) admitting at once: never more than the limit gets in."""
    import asyncio

    a, b = stores
    _, record = _record(rpm=25)
    await a.create_client_key(record)
    verdicts = await asyncio.gather(
        *((a if i % 2 else b).admit_client_key(record.id, T0) for i in range(60))
    )
    assert sum(v.ok for v in verdicts) == 25
