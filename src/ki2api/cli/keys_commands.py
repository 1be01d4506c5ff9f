"""`ki2api keys ...`: client keys with limits, kept in the state store (docs/client-keys.md).

`create` and `rotate` print the key once; the store keeps only its SHA-256. Every other command
shows a key by its name and hint (`sk-ki2api-…abcd`). Exit 0 on success, 1 on a problem (one
line on stderr), 2 on a usage error (argparse).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from ki2api.settings import Settings
from ki2api.state.base import ClientKeyRecord, StateStore
from ki2api.state.client_key_rules import check_name, hash_key, key_hint, new_key, parse_models
from ki2api.state.client_key_rules import parse_expiry as expiry_of
from ki2api.state.open_store import STORE_ERRORS, open_store, store_spec

__all__ = ["add_keys_parser", "parse_expiry", "run_keys"]

_LIMITS = ("rpm", "tpm", "daily_tokens", "monthly_requests")


class _Problem(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def _count(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def parse_expiry(raw: str) -> float:
    """`2027-01-31` (00:00 UTC that day) or an ISO 8601 time (state/client_key_rules.py)."""
    try:
        return expiry_of(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _limit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rpm", type=_count, help="requests per minute")
    p.add_argument("--tpm", type=_count, help="tokens (in + out) per minute")
    p.add_argument("--daily-tokens", type=_count, help="tokens per UTC day")
    p.add_argument("--monthly-requests", type=_count, help="requests per UTC calendar month")
    p.add_argument("--models", help="allowed models: comma-separated patterns (claude-sonnet-*)")
    p.add_argument("--expires", type=parse_expiry, help="expiry: YYYY-MM-DD or ISO 8601 time")


def add_keys_parser(sub: Any) -> None:
    keys = sub.add_parser("keys", help="client keys with limits (shown once, stored hashed)")
    cmds = keys.add_subparsers(dest="keys_command", required=True)
    create = cmds.add_parser("create", help="a new key: printed once")
    create.add_argument("name")
    _limit_options(create)
    create.add_argument("--json", action="store_true", help="machine-readable output")
    lst = cmds.add_parser("list", help="every key, its state and limits (never the key)")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    show = cmds.add_parser("show", help="one key's state and limits")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    update = cmds.add_parser("update", help="change a key's limits (0 or '' removes one)")
    update.add_argument("name")
    _limit_options(update)
    for verb, text in (
        ("disable", "refuse the key until enabled again"),
        ("enable", "accept a disabled key again"),
        ("revoke", "refuse the key for good"),
        ("rotate", "a new secret for the key (printed once); the old one stops at once"),
    ):
        cmd = cmds.add_parser(verb, help=text)
        cmd.add_argument("name")
        if verb == "rotate":
            cmd.add_argument("--json", action="store_true", help="machine-readable output")


def run_keys(settings: Settings, args: argparse.Namespace) -> int:
    command: Callable[[StateStore, argparse.Namespace], Awaitable[int]] = _COMMANDS[
        args.keys_command
    ]

    async def go() -> int:
        store = open_store(settings)
        try:
            return await command(store, args)
        finally:
            await store.aclose()

    try:
        return asyncio.run(go())
    except _Problem as exc:
        print(f"ki2api keys: {exc}", file=sys.stderr)
        return 1
    except STORE_ERRORS as exc:
        shown = store_spec(settings).shown
        print(f"ki2api keys: cannot use the state store {shown}: {exc}", file=sys.stderr)
        return 1


def _limits_of(args: argparse.Namespace) -> dict[str, Any]:
    """The limits given on the command line (None: not given)."""
    values: dict[str, Any] = {name: getattr(args, name) for name in _LIMITS}
    values["models"] = args.models
    values["expires_at"] = args.expires
    return values


async def _create(store: StateStore, args: argparse.Namespace) -> int:
    problem = check_name(args.name)
    if problem:
        raise _Problem(problem)
    key, now = new_key(), time.time()
    given = {k: v for k, v in _limits_of(args).items() if v not in (None, 0, "")}
    if "models" in given:
        given["models"] = ",".join(parse_models(given["models"])) or None
    record = ClientKeyRecord(
        id="ck-" + secrets.token_hex(6),
        name=args.name,
        key_hash=hash_key(key),
        hint=key_hint(key),
        created_at=now,
        updated_at=now,
        **given,
    )
    if not await store.create_client_key(record):
        raise _Problem(f"a key named {args.name!r} exists already (names stay taken)")
    _print_secret(record, key, args.json, "created")
    return 0


def _print_secret(record: ClientKeyRecord, key: str, as_json: bool, verb: str) -> None:
    if as_json:
        print(json.dumps({**_view(record), "key": key}))
        return
    print(f"{verb} key {record.name!r}: {key}")
    print("This is the only time the key is shown: copy it now (the store keeps only a hash).")
    if record.expires_at is not None and record.expires_at <= time.time():
        print("note: its expiry is in the past: it is refused already")


async def _record(store: StateStore, name: str) -> ClientKeyRecord:
    record = await store.get_client_key(name)
    if record is None:
        raise _Problem(f"no key named {name!r} (see `ki2api keys list`)")
    return record


def _when(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _view(record: ClientKeyRecord) -> dict[str, Any]:
    """What may be shown of a key: everything but its hash."""
    view = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    del view["key_hash"]
    for name in ("expires_at", "created_at", "updated_at"):
        view[name] = _when(view[name])
    if record.state == "active" and record.expires_at is not None:
        view["state"] = "expired" if record.expires_at <= time.time() else "active"
    return view


def _line(view: dict[str, Any]) -> str:
    limits = [f"{k}={view[k]}" for k in (*_LIMITS, "models") if view[k] is not None]
    expires = f" expires {view['expires_at']}" if view["expires_at"] else ""
    text = " ".join(limits) or "unlimited"
    return f"{view['name']:<20} {view['state']:<9} {view['hint']:<18} {text}{expires}"


async def _list(store: StateStore, args: argparse.Namespace) -> int:
    views = [_view(r) for r in await store.list_client_keys()]
    if args.json:
        print(json.dumps(views))
    elif not views:
        print("no client keys (create one with `ki2api keys create NAME`)")
    else:
        print("\n".join(_line(v) for v in views))
    return 0


async def _show(store: StateStore, args: argparse.Namespace) -> int:
    view = _view(await _record(store, args.name))
    print(json.dumps(view) if args.json else "\n".join(f"{k}: {v}" for k, v in view.items()))
    return 0


async def _update(store: StateStore, args: argparse.Namespace) -> int:
    record = await _record(store, args.name)
    given = {k: v for k, v in _limits_of(args).items() if v is not None}
    for name, value in given.items():  # 0 or '' removes a limit
        if value in (0, ""):
            given[name] = None
        elif name == "models":
            given[name] = ",".join(parse_models(value)) or None
    if not await store.update_client_key(dataclasses.replace(record, **given)):
        raise _Problem(f"key {args.name!r} is revoked: it cannot change")
    print(_line(_view(await _record(store, args.name))))
    return 0


def _state_command(state: str) -> Callable[[StateStore, argparse.Namespace], Awaitable[int]]:
    async def run(store: StateStore, args: argparse.Namespace) -> int:
        await _record(store, args.name)
        if not await store.set_client_key_state(args.name, state):
            raise _Problem(f"key {args.name!r} is revoked for good")
        print(f"key {args.name!r} is {state} (every worker sees it within a second)")
        return 0

    return run


async def _rotate(store: StateStore, args: argparse.Namespace) -> int:
    await _record(store, args.name)
    key = new_key()
    if not await store.rotate_client_key(args.name, hash_key(key), key_hint(key)):
        raise _Problem(f"key {args.name!r} is revoked: create a new one")
    _print_secret(await _record(store, args.name), key, args.json, "rotated")
    return 0


_COMMANDS: dict[str, Callable[[StateStore, argparse.Namespace], Awaitable[int]]] = {
    "create": _create,
    "list": _list,
    "show": _show,
    "update": _update,
    "disable": _state_command("disabled"),
    "enable": _state_command("active"),
    "revoke": _state_command("revoked"),
    "rotate": _rotate,
}
