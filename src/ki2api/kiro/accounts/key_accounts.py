"""Kiro API keys as store accounts (`ki2api accounts add-key`; kiro/login/api_key.py).

The key is kept with the account's tokens in the state store (mode 0600, like every store
login): `{"authMethod": "api_key", "apiKey", "region"[, "profileArn"]}`. The account's
label names the key masked (`ksk_…abcd`) only.
"""

from __future__ import annotations

import time

from ki2api.kiro.accounts.importers import AccountSourceError
from ki2api.kiro.accounts.registry import (
    AccountExists,
    new_account_id,
    new_machine_id,
    unique_id,
)
from ki2api.kiro.login.api_key import API_KEY_METHOD, mask_key, stored_key_data
from ki2api.state.base import AccountRecord, StateStore

__all__ = ["add_api_key"]


async def _holder_of(store: StateStore, key: str) -> AccountRecord | None:
    for record in await store.list_accounts():
        if record.auth_method != API_KEY_METHOD or record.source != "store":
            continue
        tokens = await store.load_tokens(record.id)
        if tokens is not None and tokens.data.get("apiKey") == key:
            return record
    return None


async def add_api_key(
    store: StateStore,
    key: str,
    *,
    region: str,
    account_id: str | None = None,
    profile_arn: str | None = None,
) -> AccountRecord:
    """A new store account for `key` (checked by the caller: `check_key`). Raises
    `AccountExists` when the key is already in the pool, `AccountSourceError` for a bad id."""
    same = await _holder_of(store, key)
    if same is not None:
        raise AccountExists(same)
    taken = {r.id for r in await store.list_accounts()}
    account_id = new_account_id(account_id, taken, lambda free: unique_id("api-key", free))
    record = AccountRecord(
        id=account_id,
        source="store",
        label=f"Kiro API key {mask_key(key)} ({region})",
        auth_method=API_KEY_METHOD,
        machine_id=new_machine_id(),
        path=None,
        created_at=time.time(),
    )
    await store.upsert_account(record)
    data = stored_key_data(key, region, profile_arn)
    if await store.save_tokens(account_id, data, expected_version=None) is None:
        await store.remove_account(account_id)
        raise AccountSourceError(f"account {account_id!r}: tokens were already stored for it")
    return record
