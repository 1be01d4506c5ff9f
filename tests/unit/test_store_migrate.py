"""`ki2api store migrate`'s copy (cli/store_commands.py) from a SQLite store into a real Redis:
what a second run keeps, what --force overwrites, the refusal of other accounts, usage rows
copied once and without charging the keys again."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ki2api.cli.store_commands import _Problem, migrate
from ki2api.state.base import AccountRecord, ClientKeyRecord, Health, UsageRow
from ki2api.state.redis_store import RedisStore
from ki2api.state.sqlite import SQLiteStore
from tests.support.stores import unique_prefix

ONE = AccountRecord("a1", "store", "one", "social", "1" * 64)


@pytest.fixture
async def pair(redis_server: str, tmp_path: Path) -> AsyncIterator[tuple[SQLiteStore, RedisStore]]:
    source = SQLiteStore.open(tmp_path / "s.sqlite3")
    target = RedisStore.open(unique_prefix(redis_server))
    await source.upsert_account(ONE)
    await source.save_tokens("a1", {"refreshToken": "old"}, expected_version=None)
    await source.put_health(Health("a1", strikes=1))
    try:
        yield source, target
    finally:
        await source.aclose()
        await target.aclose()


async def test_a_second_run_keeps_what_the_target_has_learnt(
    pair: tuple[SQLiteStore, RedisStore],
) -> None:
    source, target = pair
    first = await migrate(source, target)
    assert (first.accounts_new, first.tokens, first.health) == (1, 1, 1)
    # the gateway on Redis refreshed the login, disabled the account, counted a strike
    await target.save_tokens("a1", {"refreshToken": "new"}, expected_version=1)
    await target.set_enabled("a1", False, "suspended")
    await target.put_health(Health("a1", strikes=3))
    again = await migrate(source, target)
    assert (again.accounts_new, again.tokens, again.tokens_kept, again.health) == (0, 0, 1, 0)
    tokens = await target.load_tokens("a1")
    account = await target.get_account("a1")
    assert tokens is not None and dict(tokens.data) == {"refreshToken": "new"}
    assert account is not None and not account.enabled
    assert (await target.health())["a1"].strikes == 3
    forced = await migrate(source, target, force=True)
    assert (forced.tokens, forced.health) == (1, 1)
    tokens = await target.load_tokens("a1")
    assert tokens is not None and dict(tokens.data) == {"refreshToken": "old"}


@pytest.mark.parametrize(
    "theirs",
    [
        AccountRecord("b2", "store", "two", "social", "2" * 64),  # another id
        AccountRecord("a1", "store", "one", "social", "9" * 64),  # another login, same id
    ],
    ids=["other-id", "other-login"],
)
async def test_other_accounts_are_refused_without_force(
    pair: tuple[SQLiteStore, RedisStore], theirs: AccountRecord
) -> None:
    source, target = pair
    await target.upsert_account(theirs)
    with pytest.raises(_Problem, match="other accounts"):
        await migrate(source, target)
    assert await target.load_tokens("a1") is None  # nothing was copied
    done = await migrate(source, target, force=True)
    assert done.accounts == 1


async def test_usage_rows_are_copied_once_without_charging_keys_again(
    pair: tuple[SQLiteStore, RedisStore],
) -> None:
    source, target = pair
    record = ClientKeyRecord("ck-1", "team", "f" * 64, "hint", tpm=100)
    await source.create_client_key(record)
    now = time.time()
    await source.record_usage([UsageRow(now, "team", "a1", "m", 60, 40, 1.0, "ok")])
    first = await migrate(source, target, usage=True)
    assert (first.keys_new, first.usage_rows) == (1, 1)
    assert (await target.admit_client_key("ck-1", now)).ok  # charged again: 100 of 100, a 429
    again = await migrate(source, target, usage=True)
    assert (again.keys_new, again.usage_rows) == (0, 0)
    assert again.notes == ["the target has usage rows already: none copied"]
    assert await target.usage_count() == 1
