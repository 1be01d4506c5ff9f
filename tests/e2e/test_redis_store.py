"""A gateway on Redis (KI2API_STORE=redis://…) against the emulator, through the openai SDK: its
account's expired token is refreshed into Redis, its usage rows land in the stream, a client key
kept in Redis is admitted and limited; and `ki2api store migrate` copies a SQLite store into
Redis (counts, idempotent, refusing other accounts, never printing the password).

One redis-server per xdist worker (tests/support/stores.py), a key prefix per test.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any, TypeVar

import openai
import pytest

from ki2api.kiro.accounts.registry import add_account
from ki2api.state.base import AccountRecord, ClientKeyRecord, Health, UsageRow
from ki2api.state.client_key_rules import hash_key, key_hint, new_key
from ki2api.state.redis_store import RedisStore
from ki2api.state.sqlite import SQLiteStore
from tests.conftest import make_expired_account
from tests.support.polling import eventually
from tests.support.procs import run_cli
from tests.support.stores import on_redis, redis_server, start_redis  # noqa: F401  (redis_server: a fixture)

T = TypeVar("T")
MODEL = "claude-sonnet-4.5"


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    server: str = request.getfixturevalue("redis_server")
    return f"{server}?prefix=e2e{uuid.uuid4().hex[:10]}:"


def test_a_gateway_on_redis_refreshes_into_it_and_logs_usage(
    emulator_url: str, tmp_path: Path, gateway_factory: Any, redis_url: str
) -> None:
    acct = make_expired_account(emulator_url, tmp_path / "login")
    first = json.loads(acct.token_file.read_text())
    record = on_redis(redis_url, lambda s: add_account(s, first, label="e2e on Redis"))
    gw = gateway_factory(acct, store=redis_url, kiro_creds_file=None)
    client = gw.openai()
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello redis"}]
    )
    assert answer.choices[0].message.content == "Echo: hello redis"
    chunks = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "streamed"}], stream=True
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: streamed"
    )
    assert gw.emulator_stats()["refreshes"] == 1

    tokens = on_redis(redis_url, lambda s: s.load_tokens(record.id))
    assert tokens is not None and tokens.version >= 2
    assert tokens.data["accessToken"] != first["accessToken"]  # the refreshed one, in Redis

    def two_rows() -> bool:
        return on_redis(redis_url, lambda s: s.usage_count()) == 2

    eventually(two_rows)
    rows = on_redis(redis_url, lambda s: s.usage_rows())
    assert [(r.account_id, r.outcome, r.stream, r.status) for r in rows] == [
        (record.id, "ok", False, 200),
        (record.id, "ok", True, 200),
    ]


def test_a_client_key_kept_in_redis_is_admitted_then_limited(
    emulator_url: str, tmp_path: Path, gateway_factory: Any, redis_url: str
) -> None:
    key = new_key()
    made = ClientKeyRecord("ck-redis", "ci-bot", hash_key(key), key_hint(key), rpm=1)
    assert on_redis(redis_url, lambda s: s.create_client_key(made))
    gw = gateway_factory(store=redis_url)
    client = gw.openai(api_key=key)
    messages: Any = [{"role": "user", "content": "once"}]
    assert client.chat.completions.create(model=MODEL, messages=messages).choices
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=messages)
    assert "requests per minute" in caught.value.message


# ki2api store migrate ------------------------------------------------------------------------
PASSWORD = "migrate-pa55word"


def _sqlite_store(path: Path) -> str:
    """A SQLite store with an account, its tokens and health, a client key that has counted
    one request, and three usage rows; returns the key's id."""

    async def fill() -> str:
        store = SQLiteStore.open(path)
        try:
            await store.upsert_account(AccountRecord("a1", "store", "one", "social", "1" * 64))
            await store.save_tokens("a1", {"refreshToken": "r-secret-1"}, expected_version=None)
            await store.put_health(Health("a1", strikes=2, reason="throttled"))
            key = new_key()
            record = ClientKeyRecord("ck-m", "migrated", hash_key(key), key_hint(key), rpm=5)
            await store.create_client_key(record)
            assert (await store.admit_client_key(record.id, time.time())).ok
            now = time.time()
            rows = [UsageRow(now - i, "migrated", "a1", MODEL, 3, 4, 5.0, "ok") for i in range(3)]
            await store.record_usage(rows)
            return record.id
        finally:
            await store.aclose()

    return asyncio.run(fill())


def test_migrate_copies_a_sqlite_store_into_redis(tmp_path: Path, redis_url: str) -> None:
    data = tmp_path / "data"
    key_id = _sqlite_store(data / "ki2api.sqlite3")
    env = {"KI2API_DATA_DIR": str(data)}
    args = ["store", "migrate", "--to", redis_url, "--usage", "--json"]
    done = run_cli(tmp_path, tmp_path, args, env)
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)
    assert {k: counts[k] for k in ("accounts_new", "tokens", "health", "keys_new", "counters")} == {
        "accounts_new": 1,
        "tokens": 1,
        "health": 1,
        "keys_new": 1,
        "counters": 1,
    }
    assert counts["usage_rows"] == 3

    async def look(s: RedisStore) -> tuple[Any, ...]:
        tokens = await s.load_tokens("a1")
        minute = await s.admit_client_key(key_id, time.time())  # the copied count: 2 of 5
        return (
            [a.id for a in await s.list_accounts()],
            tokens and dict(tokens.data),
            (await s.health())["a1"].strikes,
            minute.ok,
            await s.usage_count(),
        )

    assert on_redis(redis_url, look) == (["a1"], {"refreshToken": "r-secret-1"}, 2, True, 3)

    again = run_cli(tmp_path, tmp_path, ["store", "migrate", "--usage"], {
        **env, "KI2API_STORE": redis_url})  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "accounts     1 (0 new)" in again.stdout and "tokens       0 copied" in again.stdout
    assert "r-secret-1" not in again.stdout + again.stderr
    summed = run_cli(
        tmp_path, tmp_path, ["usage", "--by", "key", "--json"], {**env, "KI2API_STORE": redis_url}
    )  # `ki2api usage` reads Redis
    assert [(g["group"], g["requests"]) for g in json.loads(summed.stdout)] == [("migrated", 3)]

    other = tmp_path / "other.sqlite3"
    raw = SQLiteStore.open(other)
    asyncio.run(raw.upsert_account(AccountRecord("b2", "store", "two", "social", "2" * 64)))
    raw.close()
    refused = run_cli(tmp_path, tmp_path, ["store", "migrate", "--from", f"sqlite:{other}",
                                           "--to", redis_url], env)  # fmt: skip
    assert refused.returncode == 1 and "other accounts (a1)" in refused.stderr


def test_migrate_never_shows_the_password(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _sqlite_store(data / "ki2api.sqlite3")
    proc, url = start_redis(tmp_path / "redis", "--requirepass", PASSWORD)
    try:
        env = {"KI2API_DATA_DIR": str(data)}
        right = url.replace("redis://", f"redis://:{PASSWORD}@")
        wrong = url.replace("redis://", "redis://:not-the-password@")
        done = run_cli(tmp_path, tmp_path, ["store", "migrate", "--to", right], env)
        refused = run_cli(tmp_path, tmp_path, ["store", "migrate", "--to", wrong], env)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert done.returncode == 0, done.stderr
    assert f"-> {url} (prefix 'ki2api:')" in done.stdout
    assert refused.returncode == 1 and refused.stderr.startswith("ki2api store: ")
    for out in (done, refused):
        assert PASSWORD not in out.stdout + out.stderr
        assert "not-the-password" not in out.stdout + out.stderr
