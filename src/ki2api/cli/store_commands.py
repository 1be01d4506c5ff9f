"""`ki2api store migrate`: copy one state store into another (SQLite to Redis, to scale out).

    ki2api store migrate --from sqlite:data/ki2api.sqlite3 --to redis://redis:6379/0

`--from` defaults to the SQLite store of the data directory, `--to` to KI2API_STORE (so a Redis
password need not be typed on a command line). Copied: accounts, their tokens and health,
client keys (their hashes, and their counters when the source is SQLite and the target Redis)
and, with `--usage`, the usage rows (into a target without any). Running it again changes
nothing: accounts (and their health) and keys already there are kept, tokens that differ in
the target (a replica refreshed them since) are kept unless `--force`. It refuses a target that
already holds other accounts than the source's unless `--force`. Exit 0 on success, 1 on a
problem.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from ki2api.settings import Settings
from ki2api.state.base import AccountRecord, StateStore
from ki2api.state.client_key_rules import Counter
from ki2api.state.open_store import StoreSpec, open_spec, parse_store
from ki2api.state.redis_store import RedisStore

__all__ = ["MigrateCounts", "add_store_parser", "migrate", "run_store"]

_USAGE_BATCH = 1_000
_USAGE_MAX = 1_000_000  # rows read from the source at most (the newest)


class _Problem(Exception):
    """A refusal or a bad argument: one line on stderr, exit 1."""


@dataclass
class MigrateCounts:
    """What `migrate` did (printed, or as JSON with --json)."""

    accounts: int = 0
    accounts_new: int = 0
    tokens: int = 0
    tokens_kept: int = 0
    health: int = 0
    keys: int = 0
    keys_new: int = 0
    counters: int = 0
    usage_rows: int = 0
    notes: list[str] = field(default_factory=list)


def add_store_parser(sub: Any) -> None:
    store = sub.add_parser("store", help="the state store: migrate SQLite to Redis")
    cmds = store.add_subparsers(dest="store_command", required=True)
    mig = cmds.add_parser("migrate", help="copy accounts, tokens, health and keys to a store")
    mig.add_argument("--from", dest="source", help="sqlite:PATH or redis://… (default: data dir)")
    mig.add_argument("--to", dest="target", help="sqlite:PATH or redis://… (default: KI2API_STORE)")
    mig.add_argument("--usage", action="store_true", help="copy the usage rows too")
    mig.add_argument("--force", action="store_true", help="over a target with other accounts")
    mig.add_argument("--json", action="store_true", help="machine-readable output")


def _specs(settings: Settings, args: argparse.Namespace) -> tuple[StoreSpec, StoreSpec]:
    try:
        source = parse_store(args.source, settings.data_dir)
        target = parse_store(args.target or settings.store, settings.data_dir)
    except ValueError as exc:
        raise _Problem(str(exc)) from None
    if not (args.target or settings.store):
        raise _Problem("say where to: --to redis://… (or set KI2API_STORE)")
    if source == target:
        raise _Problem("--from and --to name the same store")
    if source.path is not None and not source.path.exists():
        raise _Problem(f"{source.shown} does not exist")
    return source, target


def run_store(settings: Settings, args: argparse.Namespace) -> int:
    try:
        source, target = _specs(settings, args)
        counts = asyncio.run(_migrate_specs(source, target, args.usage, args.force))
    except _Problem as exc:
        print(f"ki2api store: {exc}", file=sys.stderr)
        return 1
    except (OSError, sqlite3.Error, RedisError) as exc:
        print(f"ki2api store: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(vars(counts), indent=2))
    else:
        print(f"copied {source.shown} -> {target.shown}")
        print(_summary(counts))
    return 0


def _summary(c: MigrateCounts) -> str:
    lines = [
        f"accounts     {c.accounts} ({c.accounts_new} new)",
        f"tokens       {c.tokens} copied, {c.tokens_kept} kept (the target's differ)",
        f"health       {c.health}",
        f"client keys  {c.keys} ({c.keys_new} new), counters of {c.counters}",
        f"usage rows   {c.usage_rows}",
    ]
    return "\n".join(lines + [f"note: {n}" for n in c.notes])


async def _migrate_specs(
    source_spec: StoreSpec, target_spec: StoreSpec, usage: bool, force: bool
) -> MigrateCounts:
    source, target = open_spec(source_spec), open_spec(target_spec)
    try:
        counts = await migrate(source, target, usage=usage, force=force)
        await _copy_counters(source_spec, target, counts)
        return counts
    finally:
        await source.aclose()
        await target.aclose()


async def migrate(
    source: StateStore, target: StateStore, *, usage: bool = False, force: bool = False
) -> MigrateCounts:
    """Copy `source` into `target` (see the module's docstring); `_Problem` on a refusal."""
    counts = MigrateCounts()
    accounts = await source.list_accounts()
    await _check_target(accounts, target, force)
    health = await source.health()
    for record in accounts:
        counts.accounts += 1
        new = await target.get_account(record.id) is None
        if new or force:  # one already there is the target's own now (enabled, limits)
            counts.accounts_new += new
            await target.upsert_account(record)
            if record.id in health:
                await target.put_health(health[record.id])
                counts.health += 1
        await _copy_tokens(source, target, record.id, force, counts)
    for key in await source.list_client_keys():
        counts.keys += 1
        counts.keys_new += await target.create_client_key(key)
    if usage:
        await _copy_usage(source, target, counts)
    return counts


def _login(record: AccountRecord | None) -> tuple[Any, ...] | None:
    """What makes an account the same login (its state may differ in a store in use)."""
    if record is None:
        return None
    return (record.source, record.auth_method, record.machine_id, record.path)


async def _check_target(accounts: list[AccountRecord], target: StateStore, force: bool) -> None:
    mine = {a.id: a for a in accounts}
    theirs = await target.list_accounts()
    other = sorted(a.id for a in theirs if _login(mine.get(a.id)) != _login(a))
    if other and not force:
        shown = ", ".join(other[:5]) + (", …" if len(other) > 5 else "")
        raise _Problem(
            f"the target already holds other accounts ({shown}); --force copies over them"
        )


async def _copy_tokens(
    source: StateStore, target: StateStore, account_id: str, force: bool, counts: MigrateCounts
) -> None:
    tokens = await source.load_tokens(account_id)
    if tokens is None:
        return
    there = await target.load_tokens(account_id)
    if there is not None and dict(there.data) == dict(tokens.data):
        return
    if there is not None and not force:
        counts.tokens_kept += 1
        return
    saved = await target.save_tokens(
        account_id,
        tokens.data,
        expected_version=None if there is None else there.version,
        synced_mtime_ns=tokens.synced_mtime_ns,
    )
    counts.tokens += saved is not None


async def _copy_usage(source: StateStore, target: StateStore, counts: MigrateCounts) -> None:
    if await target.usage_count():
        counts.notes.append("the target has usage rows already: none copied")
        return
    rows = await source.usage_rows(limit=_USAGE_MAX)
    for start in range(0, len(rows), _USAGE_BATCH):
        batch = rows[start : start + _USAGE_BATCH]
        if isinstance(target, RedisStore):  # the keys' counters are copied as they were
            await target.record_usage(batch, charge=False)
        else:
            await target.record_usage(batch)
        counts.usage_rows += len(batch)


async def _copy_counters(source: StoreSpec, target: StateStore, counts: MigrateCounts) -> None:
    """Client keys' counters, from a SQLite file to Redis (the windows they are in)."""
    if source.path is None or not isinstance(target, RedisStore):
        if counts.keys:
            counts.notes.append("client keys' counters are copied from SQLite to Redis only")
        return
    for key_id, found in _sqlite_counters(source.path).items():
        counts.counters += await target.seed_key_counters(key_id, found)


def _sqlite_counters(path: Path) -> dict[str, dict[str, Counter]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        sql = "SELECT key_id, period, window, requests, tokens FROM client_key_counters"
        out: dict[str, dict[str, Counter]] = {}
        for key_id, period, window, requests, tokens in conn.execute(sql):
            out.setdefault(key_id, {})[period] = Counter(window, requests, tokens)
        return out
    finally:
        conn.close()
