"""Which accounts the pool has: the store's own, plus the logins the gateway discovers itself.

Discovered accounts are the single login of `credentials_discovery.discover` (id "env" for the
environment variables, "default" for a token file), every token file under `KIRO_CREDS_DIR`,
and a Kiro API key in `KIRO_API_KEY` (id "api-key", source "env", auth method "api_key"; the
key itself is never stored: kiro/login/api_key.py). `sync_discovered` registers them in the
store (source "env" / "file"; the tokens of a file account stay in its file) so each keeps one
id and one machine id across restarts, and forgets those no longer discovered. `add_account`
puts an imported login into the store itself (source "store"). Nothing here logs or raises a
token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.kiro.accounts.importers import (
    AccountSourceError,
    has_tokens,
    login_method,
    safe_id,
    scan_token_dir,
)
from ki2api.kiro.login.api_key import API_KEY_METHOD, API_KEY_REVOKED, check_key, mask_key
from ki2api.kiro.login.discovery import auth_method_of, discover
from ki2api.kiro.login.token_file import TokenFileError, read_token_file
from ki2api.settings import Settings
from ki2api.state.base import FILE_SOURCES, AccountRecord, StateStore
from ki2api.state.open_store import STORE_FILE_NAME

__all__ = [
    "DISCOVERED_SOURCES",
    "STORE_FILE_NAME",
    "AccountExists",
    "add_account",
    "new_machine_id",
    "store_path",
    "sync_discovered",
    "unique_id",
]

DISCOVERED_SOURCES = frozenset({"file", "env"})
_SYNC_LOCK = "accounts:sync-discovered"
_SYNC_LOCK_TTL_S = 30.0
_SYNC_LOCK_WAIT_S = 10.0


class AccountExists(Exception):
    """The login is already in the pool, as `record` (nothing was changed)."""

    def __init__(self, record: AccountRecord) -> None:
        super().__init__(f"this login is already registered as account {record.id!r}")
        self.record = record


def store_path(settings: Settings) -> Path:
    """The SQLite state store of this gateway when KI2API_STORE names none (state/open_store.py)."""
    return settings.data_dir / STORE_FILE_NAME


def new_machine_id() -> str:
    """A random 64-hex machine id, kept for the account's lifetime."""
    return secrets.token_hex(32)


def unique_id(base: str, taken: set[str] | frozenset[str]) -> str:
    """`base` (made safe), or `base-2`, `base-3`... when taken."""
    base = safe_id(base)
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        tail = f"-{n}"
        candidate = base[: 40 - len(tail)].rstrip("-") + tail
    return candidate


@dataclass(frozen=True)
class _Found:
    """One discovered login, before it is matched with the store."""

    preferred_id: str
    source: str  # "env" | "file"
    label: str
    auth_method: str
    path: Path | None
    refresh_token: str | None = dataclasses.field(default=None, repr=False)


def _resolved(path: Path | str | None) -> str | None:
    return os.path.realpath(path) if path is not None else None


def _file_login(preferred_id: str, path: Path, label: str) -> _Found | None:
    path = Path(os.path.abspath(path))
    try:
        data = read_token_file(path).data
        method = auth_method_of(data)
    except (TokenFileError, GatewayError):
        return None
    if not has_tokens(data):
        return None
    refresh = data.get("refreshToken")
    refresh = refresh if isinstance(refresh, str) and refresh else None
    return _Found(preferred_id, "file", label, method, path, refresh)


def _discovered(settings: Settings) -> list[_Found]:
    found: list[_Found] = []
    source = discover(settings).source
    if source is not None and source.kind == "env":
        found.append(
            _Found("env", "env", source.description, "social", None, settings.kiro_refresh_token)
        )
    elif source is not None and source.path is not None:
        login = _file_login("default", source.path, source.description)
        if login is not None:
            found.append(login)
    if settings.kiro_api_key:
        try:
            check_key(settings.kiro_api_key)
        except ValueError as exc:
            raise GatewayError(ErrorKind.NO_CREDENTIALS, f"KIRO_API_KEY: {exc}") from None
        label = f"environment variable KIRO_API_KEY (key {mask_key(settings.kiro_api_key)})"
        found.append(_Found("api-key", "env", label, API_KEY_METHOD, None))
    if settings.kiro_creds_dir is not None:
        try:
            scanned = scan_token_dir(settings.kiro_creds_dir)
        except AccountSourceError:
            scanned = []
        for name, path in scanned:
            label = f"token file {os.path.abspath(path)} (from KIRO_CREDS_DIR)"
            login = _file_login(name, path, label)
            if login is not None:
                found.append(login)
    return _deduplicated(found)


def _deduplicated(found: list[_Found]) -> list[_Found]:
    paths: set[str] = set()
    refresh_tokens: set[str] = set()
    out: list[_Found] = []
    for login in found:
        path = _resolved(login.path)
        if (path is not None and path in paths) or (
            login.refresh_token is not None and login.refresh_token in refresh_tokens
        ):
            continue
        if path is not None:
            paths.add(path)
        if login.refresh_token is not None:
            refresh_tokens.add(login.refresh_token)
        out.append(login)
    return out


async def _store_refresh_tokens(store: StateStore, records: list[AccountRecord]) -> set[str]:
    out: set[str] = set()
    for record in records:
        if record.source != "store":
            continue
        tokens = await store.load_tokens(record.id)
        refresh = tokens.data.get("refreshToken") if tokens is not None else None
        if isinstance(refresh, str) and refresh:
            out.add(refresh)
    return out


def _match(login: _Found, records: list[AccountRecord]) -> AccountRecord | None:
    for record in records:
        if record.source != login.source:
            continue
        if login.source == "env":  # the tokens' login or the API key's: one account each
            if (record.auth_method == API_KEY_METHOD) == (login.auth_method == API_KEY_METHOD):
                return record
        elif _resolved(record.path) == _resolved(login.path):
            return record
    return None


def _new_record(login: _Found, taken: set[str]) -> AccountRecord:
    base = login.preferred_id
    if base in taken and login.source == "file" and login.preferred_id != "default":
        base = f"dir-{base}"
    return AccountRecord(
        id=unique_id(base, taken),
        source=login.source,
        label=login.label,
        auth_method=login.auth_method,
        machine_id=new_machine_id(),
        path=str(login.path) if login.path is not None else None,
        created_at=time.time(),
    )


async def _register(
    store: StateStore, found: list[_Found], records: list[AccountRecord]
) -> list[AccountRecord]:
    taken = {r.id for r in records}
    kept: list[AccountRecord] = []
    for login in found:
        existing = _match(login, records)
        if existing is None:
            record = _new_record(login, taken)
        else:
            path = str(login.path) if login.path is not None else None
            record = dataclasses.replace(
                existing, label=login.label, auth_method=login.auth_method, path=path
            )
            if existing.disabled_reason == API_KEY_REVOKED and existing.label != login.label:
                record = dataclasses.replace(record, enabled=True, disabled_reason=None)  # new key
        if record != existing:
            await store.upsert_account(record)
        taken.add(record.id)
        kept.append(record)
    return kept


async def _locked_sync(settings: Settings, store: StateStore) -> list[AccountRecord]:
    records = await store.list_accounts()
    in_store = await _store_refresh_tokens(store, records)
    found = [
        f for f in _discovered(settings) if not (f.refresh_token and f.refresh_token in in_store)
    ]
    kept = await _register(store, found, records)
    kept_ids = {r.id for r in kept}
    for record in records:
        if record.source in DISCOVERED_SOURCES and record.id not in kept_ids:
            await store.remove_account(record.id)
    return kept


async def sync_discovered(settings: Settings, store: StateStore) -> list[AccountRecord]:
    """Register the discovered accounts in `store` (ids and machine ids kept across runs),
    forget the discovered ones no longer found, and return those found, in discovery order.
    A login already kept in the store itself (same refresh token) is not registered twice."""
    owner = secrets.token_hex(8)
    deadline = time.monotonic() + _SYNC_LOCK_WAIT_S
    while not await store.try_lock(_SYNC_LOCK, owner, _SYNC_LOCK_TTL_S):
        if time.monotonic() > deadline:
            break  # a stuck holder: its ttl is long, go ahead (upserts are idempotent)
        await asyncio.sleep(0.05)
    try:
        return await _locked_sync(settings, store)
    finally:
        await store.unlock(_SYNC_LOCK, owner)


async def _find_same_login(store: StateStore, refresh_token: str) -> AccountRecord | None:
    for record in await store.list_accounts():
        if record.source == "store":
            tokens = await store.load_tokens(record.id)
            data: Mapping[str, Any] = tokens.data if tokens is not None else {}
        elif record.source in FILE_SOURCES and record.path:
            try:
                data = read_token_file(Path(record.path)).data
            except TokenFileError:
                continue
        else:
            continue
        if data.get("refreshToken") == refresh_token:
            return record
    return None


async def add_account(
    store: StateStore,
    token_json: Mapping[str, Any],
    *,
    label: str,
    account_id: str | None = None,
    priority: int = 0,
    weight: int = 1,
    link: Path | None = None,
    proxy: str | None = None,
    max_inflight: int | None = None,
    pace_rpm: float | None = None,
) -> AccountRecord:
    """Put a login into the store (source "store": a copy of its tokens), or with `link` the
    token file itself (source "linked": read before each refresh and written back, so the
    program that wrote it and the gateway keep sharing one login). Raises `AccountExists` when
    the same refresh token is already in the pool, `AccountSourceError` when it cannot be
    used."""
    method = login_method(token_json, where=label)
    refresh = token_json.get("refreshToken")
    if isinstance(refresh, str) and refresh:
        same = await _find_same_login(store, refresh)
        if same is not None:
            raise AccountExists(same)
    taken = {r.id for r in await store.list_accounts()}
    account_id = new_account_id(account_id, taken, _next_free_id)
    record = AccountRecord(
        id=account_id,
        source="store" if link is None else "linked",
        label=label,
        auth_method=method,
        machine_id=new_machine_id(),
        path=None if link is None else str(link.resolve()),
        priority=priority,
        weight=max(1, weight),
        created_at=time.time(),
        proxy=proxy or None,  # its own outbound proxy (checked by the caller)
        max_inflight=max_inflight,  # its own cap and pace (None: the pool's)
        pace_rpm=pace_rpm,
    )
    await store.upsert_account(record)
    if link is not None:
        return record  # its tokens stay in the file
    if await store.save_tokens(account_id, dict(token_json), expected_version=None) is None:
        raise AccountSourceError(f"account {account_id!r}: tokens were already stored for it")
    return record


def new_account_id(wanted: str | None, taken: set[str], make: Callable[[set[str]], str]) -> str:
    """The id of a new store account: `wanted` when it is a safe id not yet taken
    (AccountSourceError otherwise), else one `make` picks among the free ones."""
    if wanted is None:
        return make(taken)
    if safe_id(wanted) != wanted:
        raise AccountSourceError(f"account id {wanted!r}: use only a-z, 0-9, _ and -")
    if wanted in taken:
        raise AccountSourceError(f"account id {wanted!r} is already taken")
    return wanted


def _next_free_id(taken: set[str]) -> str:
    n = 1
    while f"acct-{n}" in taken:
        n += 1
    return f"acct-{n}"
