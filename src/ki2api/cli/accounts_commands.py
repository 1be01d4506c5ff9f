"""`ki2api accounts ...`: see and manage the account pool kept in the state store.

Every command opens the store and registers the discovered logins first (so they are listed
and addressable too), prints a few human lines, and exits 0 on success, 1 on a problem (one
clear line on stderr), 2 on a usage error (argparse). No output ever holds a token or secret.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from ki2api.cli.login_commands import add_key, add_key_parser
from ki2api.cli.proxy_commands import (
    ProxyRefused,
    add_proxy_option,
    network_paths,
    network_warnings,
    set_proxy,
    usable_proxy,
)
from ki2api.cli.slot_commands import add_slot_options, set_slot_limits, slot_changes, slot_view
from ki2api.core.errors import GatewayError
from ki2api.kiro.accounts.importers import (
    AccountSourceError,
    default_kiro_cli_db,
    load_token_json,
    read_kiro_cli_db,
    scan_token_dir,
)
from ki2api.kiro.accounts.logins import refresh_account
from ki2api.kiro.accounts.policy import STUCK_THROTTLE
from ki2api.kiro.accounts.quota import check_quotas
from ki2api.kiro.accounts.registry import (
    DISCOVERED_SOURCES,
    AccountExists,
    add_account,
    sync_discovered,
    unique_id,
)
from ki2api.kiro.accounts.trouble import describe_suspension, trouble_view
from ki2api.kiro.endpoint import chat_region
from ki2api.settings import Settings
from ki2api.state.base import FILE_SOURCES, AccountRecord, Health, StateStore
from ki2api.state.open_store import STORE_ERRORS, open_store, store_spec

__all__ = ["add_accounts_parser", "positive_int", "run_accounts"]

Command = Callable[[Settings, StateStore, argparse.Namespace], Awaitable[int]]


class _Problem(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def add_accounts_parser(sub: Any) -> None:
    """Register `accounts` and its subcommands on the top-level subparsers."""
    accounts = sub.add_parser("accounts", help="list and manage the Kiro account pool")
    cmds = accounts.add_subparsers(dest="accounts_command", required=True)
    lst = cmds.add_parser("list", help="every account with its health and quota")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.add_argument(
        "--check-quota", action="store_true", help="ask Kiro for each account's quota first"
    )
    add = cmds.add_parser("add", help="add the login in a token file to the store")
    add.add_argument("file", type=Path)
    add.add_argument("--id", dest="account_id", help="account id (default: acct-N)")
    add.add_argument("--priority", type=int, default=0, help="higher is preferred (default 0)")
    add.add_argument("--weight", type=positive_int, default=1, help="share among equals (>= 1)")
    add.add_argument("--link", action="store_true", help=_LINK_HELP)
    add_proxy_option(add)
    add_slot_options(add)
    setp = cmds.add_parser("set", help="change an account's settings (e.g. --proxy)")
    setp.add_argument("account_id", metavar="ID")
    add_proxy_option(setp)
    add_slot_options(setp)
    add_key_parser(cmds)  # `accounts add-key` (cli/login_commands.py)
    imp = cmds.add_parser("import", help="add every token file under a directory")
    imp.add_argument("directory", type=Path)
    imp.add_argument("--link", action="store_true", help=_LINK_HELP)
    cli = cmds.add_parser("import-kiro-cli", help="add the logins kept by kiro-cli")
    cli.add_argument("db", type=Path, nargs="?", help="kiro-cli's data.sqlite3 (default: found)")
    rm = cmds.add_parser("remove", help="forget an account")
    rm.add_argument("account_id", metavar="ID")
    rm.add_argument("--force", action="store_true", help="also a discovered (file/env) one")
    for name, text in (
        ("refresh", "refresh an account's access token now"),
        ("disable", "stop using an account"),
        ("enable", "use an account again"),
    ):
        cmds.add_parser(name, help=text).add_argument("account_id", metavar="ID")


def positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def run_accounts(settings: Settings, args: argparse.Namespace) -> int:
    """Run one `accounts` subcommand; returns the exit status."""
    return asyncio.run(_run(settings, args))


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    command = _COMMANDS[args.accounts_command]
    try:
        store = open_store(settings)
    except (OSError, sqlite3.Error, RedisError, ValueError) as exc:
        return _fail(f"cannot open the state store {store_spec(settings).shown}: {exc}")
    try:
        await sync_discovered(settings, store)
        return await command(settings, store, args)
    except (_Problem, AccountSourceError) as exc:
        return _fail(str(exc))
    except GatewayError as exc:
        return _fail(exc.message)
    except STORE_ERRORS as exc:
        return _fail(f"{type(exc).__name__}: {exc}")
    finally:
        await store.aclose()


def _fail(message: str) -> int:
    print(f"ki2api accounts: {message}", file=sys.stderr)
    return 1


async def _get(store: StateStore, account_id: str) -> AccountRecord:
    record = await store.get_account(account_id)
    if record is None:
        ids = ", ".join(r.id for r in await store.list_accounts()) or "none"
        raise _Problem(f"no account {account_id!r} (accounts: {ids})")
    return record


# list -------------------------------------------------------------------------------------------


def _date(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _state(record: AccountRecord, health: Health | None, now: float) -> str:
    if not record.enabled:
        return f"disabled ({record.disabled_reason or 'no reason given'})"
    if health is not None and health.cooldown_until > now:
        if health.reason == "quota":
            return f"out of quota until {_date(health.cooldown_until)}"
        seconds = int(health.cooldown_until - now) + 1
        if health.reason == STUCK_THROTTLE:
            return (
                f"resting {seconds}s: {health.strikes} 429s in a row did not lift "
                "(likely out of quota or flagged; check the account in Kiro)"
            )
        return f"cooling down {seconds}s ({health.reason or 'unknown'})"
    return "ok"


def _figure(value: float) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.2f}"


def _quota_text(health: Health | None) -> str:
    if health is None or health.quota_remaining is None:
        return "-"
    text = _figure(health.quota_remaining)
    if health.quota_limit is not None:
        text += f"/{_figure(health.quota_limit)}"
    if health.quota_reset_at is not None:
        text += f" left, resets {_date(health.quota_reset_at)}"
    return text


def _login_facts(record: AccountRecord, tokens: Mapping[str, Any] | None) -> dict[str, Any]:
    """The profile an account's calls carry and the Kiro region they go to (never a secret)."""
    data: Mapping[str, Any] = tokens or {}
    if not data and record.source in FILE_SOURCES and record.path:
        try:
            data = load_token_json(Path(record.path))
        except AccountSourceError:
            data = {}
    arn = data.get("profileArn")
    arn = arn if isinstance(arn, str) and arn else None
    login = data.get("region")
    return {"profile_arn": arn, "login_region": login if isinstance(login, str) else None}


def _row(
    record: AccountRecord,
    health: Health | None,
    now: float,
    settings: Settings,
    tokens: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    h = health or Health(record.id)
    facts = _login_facts(record, tokens)
    if record.auth_method == "api_key" and record.source == "env":  # KIRO_API_KEY's own
        facts["login_region"] = settings.kiro_api_region
    arn = settings.kiro_profile_arn or facts["profile_arn"]
    region = chat_region(
        profile_arn=arn, login_region=facts["login_region"], override=settings.kiro_region
    )
    return {
        "id": record.id,
        "profile_arn": arn,
        "kiro_region": region,
        "source": record.source,
        "label": record.label,
        "auth_method": record.auth_method,
        "path": record.path,
        "priority": record.priority,
        "weight": record.weight,
        "enabled": record.enabled,
        "disabled_reason": record.disabled_reason,
        "state": _state(record, health, now),
        "cooldown_until": h.cooldown_until or None,
        "cooldown_reason": h.reason,
        "quota_remaining": h.quota_remaining,
        "quota_limit": h.quota_limit,
        "quota_reset_at": h.quota_reset_at,
        "quota_checked_at": h.quota_checked_at,
        "last_error": h.last_error,
        "last_ok_at": h.last_ok_at,
        **trouble_view(h, now),  # warning, warnings, suspension (kiro/accounts/trouble.py)
    }


def _print_table(rows: list[dict[str, Any]], healths: Mapping[str, Health]) -> None:
    header = ("ID", "SOURCE", "AUTH", "STATE", "SLOTS", "QUOTA", "LAST ERROR")
    lines = [header] + [
        (
            r["id"],
            r["source"],
            "api key" if r["auth_method"] == "api_key" else r["auth_method"],
            r["state"],
            r["slots"],  # in flight (all workers, `serve --workers N`) / cap
            _quota_text(healths.get(r["id"])),
            r["last_error"] or "-",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        print("  ".join([*cells, line[-1]]).rstrip())
    for r in rows:
        key = r["auth_method"] == "api_key"
        none = (
            "none (an API key sends none)"
            if key
            else "no profile yet (found at first use for IdC logins)"
        )
        profile = r["profile_arn"] or none
        where = f"Kiro {r['kiro_region']} via {r['network']}"
        print(f"  {r['id']}: {r['label']}; {profile}; {where}")
    for r in rows:  # signs of trouble (docs/accounts.md, "Trouble signs")
        h = healths.get(r["id"])
        if r["warning"]:
            print(f"  {r['id']}: WARNING: {r['warning']}")
        if h is not None and (suspension := describe_suspension(h)) is not None:
            print(f"  {r['id']}: {suspension}")


async def _list(settings: Settings, store: StateStore, args: argparse.Namespace) -> int:
    if args.check_quota:
        for note in await check_quotas(settings, store):
            print(note, file=sys.stderr)
    records = await store.list_accounts()
    healths = await store.health()
    now = time.time()
    rows = []
    paths = network_paths(settings, records)
    in_use = await store.slots_in_use(now)
    for r in records:
        stored = await store.load_tokens(r.id)
        rows.append(_row(r, healths.get(r.id), now, settings, stored.data if stored else None))
        rows[-1]["network"] = paths.get(r.id, "direct")  # never a proxy's credentials
        rows[-1].update(slot_view(settings, r, in_use.get(r.id, 0)))  # cap, pace, in flight
    for warning in network_warnings(settings, records):
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no accounts: log in with the Kiro IDE, set KIRO_CREDS_DIR, or `accounts add FILE`")
    else:
        _print_table(rows, healths)
    return 0


# add / import -----------------------------------------------------------------------------------


async def _add_one(
    store: StateStore,
    data: Mapping[str, Any],
    label: str,
    account_id: str | None,
    *,
    link: Path | None = None,
    proxy: str | None = None,
    **kw: int,
) -> bool:
    """Add one login and say what happened; False when it was already in the pool."""
    try:
        record = await add_account(
            store, data, label=label, account_id=account_id, link=link, proxy=proxy, **kw
        )
    except AccountExists as exc:
        print(f"already in the pool as {exc.record.id} ({label}); nothing changed")
        return False
    how = "reading the file itself" if link is not None else "a copy in the store"
    print(f"added {record.id} ({record.auth_method}, {label}; {how})")
    return True


# Kiro rotates refresh tokens: the old one stops working at the next refresh (docs/kiro-protocol.md
# §2.3), so a copied login and its source live only until one of them refreshes.
_LINK_HELP = (
    "keep reading the token file itself (shared with the Kiro IDE or kiro-cli that wrote it) "
    "instead of copying its login into the store"
)
_DIVERGES = (
    "note: the store now holds a copy of this login. Kiro rotates refresh tokens, so once this "
    "gateway or the program that wrote {what} (the Kiro IDE, kiro-cli) refreshes, the other's "
    "copy stops working. To share one login instead, run `ki2api accounts {cmd} --link` "
    "(or remove it and point KIRO_CREDS_FILE / KIRO_CREDS_DIR at the file)."
)


async def _add(settings: Settings, store: StateStore, args: argparse.Namespace) -> int:
    data = load_token_json(args.file)
    kw = {"priority": args.priority, "weight": args.weight, **slot_changes(args)}
    link = args.file if args.link else None
    label = f"{'linked to' if link else 'added from'} {args.file.absolute()}"
    proxy = await _checked_proxy(settings, store, args.account_id or "", args.proxy)
    if await _add_one(store, data, label, args.account_id, link=link, proxy=proxy, **kw) and (
        link is None
    ):
        print(_DIVERGES.format(what=args.file, cmd=f"add {args.file}"), file=sys.stderr)
    return 0


async def _checked_proxy(
    settings: Settings, store: StateStore, account_id: str, proxy: str | None
) -> str | None:
    try:
        return await usable_proxy(settings, store, account_id, proxy)
    except ProxyRefused as exc:
        raise _Problem(str(exc)) from None


async def _set(settings: Settings, store: StateStore, args: argparse.Namespace) -> int:
    record = await _get(store, args.account_id)
    limits = slot_changes(args)
    if args.proxy is None and not limits:
        raise _Problem(
            "nothing to set: give --proxy URL (or --proxy none), --max-inflight N, --pace RPM"
        )
    try:
        if args.proxy is not None:
            print(await set_proxy(settings, store, record, args.proxy))
    except ProxyRefused as exc:
        raise _Problem(str(exc)) from None
    if limits:  # the record as it is now (the proxy may have changed it)
        print(await set_slot_limits(settings, store, await _get(store, record.id), limits))
    return 0


async def _free_id(store: StateStore, wanted: str) -> str:
    return unique_id(wanted, {r.id for r in await store.list_accounts()})


async def _import_dir(settings: Settings, store: StateStore, args: argparse.Namespace) -> int:
    found = scan_token_dir(args.directory)
    if not found:
        raise _Problem(f"no token file (with accessToken or refreshToken) under {args.directory}")
    failed = copied = 0
    for name, path in found:
        try:
            data = load_token_json(path)
            link = path if args.link else None
            label = f"{'linked to' if link else 'imported from'} {path.absolute()}"
            if await _add_one(store, data, label, await _free_id(store, name), link=link):
                copied += link is None
        except AccountSourceError as exc:
            print(f"skipped: {exc}", file=sys.stderr)
            failed += 1
    if copied:
        what = f"the files under {args.directory}"
        print(_DIVERGES.format(what=what, cmd=f"import {args.directory}"), file=sys.stderr)
    return 1 if failed else 0


async def _import_kiro_cli(settings: Settings, store: StateStore, args: argparse.Namespace) -> int:
    db: Path = args.db or default_kiro_cli_db(settings.home_dir)
    notes: list[str] = []
    tokens = read_kiro_cli_db(db, notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if not tokens:
        raise _Problem(f"no usable login in the kiro-cli database {db} (run `kiro-cli login`)")
    added = 0
    for data in tokens:
        kind = str(data.get("authMethod", "login")).lower()
        wanted = await _free_id(store, f"kiro-cli-{kind}")
        label = f"imported from kiro-cli {db.absolute()} ({kind})"
        added += await _add_one(store, data, label, wanted)
    if added:  # kiro-cli's database cannot be shared: say that the copies diverge
        print(
            "note: the store now holds a copy of kiro-cli's login. Kiro rotates refresh tokens, "
            "so once this gateway or kiro-cli refreshes, the other's copy stops working: use "
            "the login in one of them, or sign kiro-cli in again afterwards.",
            file=sys.stderr,
        )
    return 0


# remove / enable / disable / refresh ------------------------------------------------------------


async def _remove(settings: Settings, store: StateStore, args: argparse.Namespace) -> int:
    record = await _get(store, args.account_id)
    if record.source in DISCOVERED_SOURCES and not args.force:
        how = (
            f"delete or move {record.path}"
            if record.source == "file"
            else "unset KIRO_API_KEY"
            if record.auth_method == "api_key"
            else "unset KIRO_ACCESS_TOKEN / KIRO_REFRESH_TOKEN"
        )
        raise _Problem(
            f"{record.id} is discovered ({record.label}); to remove it, {how} "
            "(or `disable` it; --force removes it until it is discovered again)"
        )
    await store.remove_account(record.id)
    print(f"removed {record.id}")
    return 0


async def _set_enabled(store: StateStore, account_id: str, enabled: bool) -> int:
    record = await _get(store, account_id)
    await store.set_enabled(record.id, enabled, None if enabled else "disabled by user")
    print(f"{'enabled' if enabled else 'disabled'} {record.id}")
    return 0


async def _disable(settings: Settings, store: StateStore, args: argparse.Namespace) -> int:
    return await _set_enabled(store, args.account_id, False)


async def _enable(settings: Settings, store: StateStore, args: argparse.Namespace) -> int:
    return await _set_enabled(store, args.account_id, True)


async def _refresh(settings: Settings, store: StateStore, args: argparse.Namespace) -> int:
    record = await _get(store, args.account_id)
    print(await refresh_account(settings, store, record.id))
    return 0


_COMMANDS: dict[str, Command] = {
    "list": _list,
    "add": _add,
    "import": _import_dir,
    "import-kiro-cli": _import_kiro_cli,
    "remove": _remove,
    "disable": _disable,
    "enable": _enable,
    "refresh": _refresh,
    "add-key": add_key,
    "set": _set,
}
