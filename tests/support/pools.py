"""A one-account AccountPool around given credentials, on a real SQLite store (for tests)."""

from __future__ import annotations

from pathlib import Path

from ki2api.kiro.accounts.pool import AccountPool
from ki2api.kiro.login.credentials import KiroCredentials
from ki2api.state.base import AccountRecord
from ki2api.state.sqlite import SQLiteStore


async def single_pool(credentials: KiroCredentials, where: Path) -> AccountPool:
    store = SQLiteStore.open(where / "pool.sqlite3")
    record = AccountRecord(
        id=credentials.account_id,
        source="file",
        label="test",
        auth_method="social",
        machine_id="0" * 64,
    )
    await store.upsert_account(record)
    pool = AccountPool(store, lambda _: credentials)
    await pool.load()
    return pool
