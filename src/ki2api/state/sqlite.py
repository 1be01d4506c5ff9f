"""`SQLiteStore`: the default `StateStore`, one SQLite file shared by every worker process.

The file holds tokens, so it is created 0600 (in a 0700 directory when we create that too)
before SQLite opens it, and the WAL companions are kept 0600 as well. WAL with
synchronous=NORMAL survives a killed process (only an OS crash can lose the last commit);
every write is one `BEGIN IMMEDIATE` transaction, so compare-and-set and locks are atomic
across processes. One connection per store object, guarded by a thread lock (the usage
batch write runs in a worker thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import astuple, fields
from pathlib import Path
from typing import Any

import orjson

from ki2api.state import client_key_sql as cks
from ki2api.state.base import (
    USAGE_GROUPS,
    AccountRecord,
    ClientKeyRecord,
    Health,
    SlotHolder,
    SlotTake,
    StoredTokens,
    UsageRow,
    UsageSummary,
)
from ki2api.state.client_key_rules import Verdict
from ki2api.state.slot_leases import take_slot_in

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

# One entry per schema version: the statements that take version i to i+1. Never edit a
# released step; append a new one (e.g. "ALTER TABLE accounts ADD COLUMN ...").
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE accounts (
            id TEXT PRIMARY KEY, source TEXT NOT NULL, label TEXT NOT NULL,
            auth_method TEXT NOT NULL, machine_id TEXT NOT NULL, path TEXT,
            priority INTEGER NOT NULL, weight INTEGER NOT NULL, enabled INTEGER NOT NULL,
            disabled_reason TEXT, created_at REAL NOT NULL)""",
        """CREATE TABLE tokens (
            account_id TEXT PRIMARY KEY, data TEXT NOT NULL, version INTEGER NOT NULL,
            synced_mtime_ns INTEGER, updated_at REAL NOT NULL)""",
        """CREATE TABLE health (
            account_id TEXT PRIMARY KEY, cooldown_until REAL NOT NULL, reason TEXT,
            strikes INTEGER NOT NULL, quota_remaining REAL, quota_limit REAL,
            quota_reset_at REAL, quota_checked_at REAL, last_error TEXT, last_ok_at REAL)""",
        """CREATE TABLE locks (
            name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL)""",
        """CREATE TABLE usage (
            id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, client_key TEXT NOT NULL,
            account_id TEXT, model TEXT, input_tokens INTEGER, output_tokens INTEGER,
            latency_ms REAL NOT NULL, outcome TEXT NOT NULL, endpoint TEXT NOT NULL,
            stream INTEGER NOT NULL, attempts INTEGER NOT NULL)""",
        "CREATE INDEX usage_at ON usage(at)",
    ),
    (
        "ALTER TABLE health ADD COLUMN strike_reason TEXT",
        "ALTER TABLE health ADD COLUMN struck_at REAL",
    ),
    (
        """CREATE TABLE responses (
            id TEXT PRIMARY KEY, record BLOB NOT NULL, expires_at REAL NOT NULL)""",
        "CREATE INDEX responses_expiry ON responses(expires_at)",
    ),
    ("ALTER TABLE accounts ADD COLUMN proxy TEXT",),  # an account's own outbound proxy
    (  # trouble signs (kiro/accounts/trouble.py): a Claude-only rest, the last suspension
        "ALTER TABLE health ADD COLUMN claude_rest_until REAL NOT NULL DEFAULT 0",
        "ALTER TABLE health ADD COLUMN suspension TEXT",
    ),
    (  # per-account concurrency cap and pace, and the slot leases counted across workers
        "ALTER TABLE accounts ADD COLUMN max_inflight INTEGER",
        "ALTER TABLE accounts ADD COLUMN pace_rpm REAL",
        """CREATE TABLE slots (
            lease TEXT PRIMARY KEY, account_id TEXT NOT NULL, host TEXT NOT NULL,
            pid INTEGER NOT NULL, expires_at REAL NOT NULL)""",
        "CREATE INDEX slots_account ON slots(account_id)",
        "CREATE TABLE slot_starts (account_id TEXT PRIMARY KEY, last_start REAL NOT NULL)",
    ),
    cks.MIGRATION,  # client keys (`ki2api keys`) and their counters
    (  # the console (server/console/): time to first byte and the HTTP status of each request
        "ALTER TABLE usage ADD COLUMN ttft_ms REAL",
        "ALTER TABLE usage ADD COLUMN status INTEGER",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

_ACCOUNT_COLS = tuple(f.name for f in fields(AccountRecord))
_HEALTH_COLS = tuple(f.name for f in fields(Health))
_USAGE_COLS = tuple(f.name for f in fields(UsageRow))
_KEPT_ON_UPSERT = frozenset({"id", "machine_id", "created_at"})
_BUSY_TIMEOUT_MS = 10_000


def _insert_sql(table: str, cols: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"


def _upsert_sql(table: str, cols: Sequence[str], key: str, kept: frozenset[str]) -> str:
    sets = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in kept)
    return f"{_insert_sql(table, cols)} ON CONFLICT({key}) DO UPDATE SET {sets}"


_UPSERT_ACCOUNT = _upsert_sql("accounts", _ACCOUNT_COLS, "id", _KEPT_ON_UPSERT)
_PUT_HEALTH = _upsert_sql("health", _HEALTH_COLS, "account_id", frozenset({"account_id"}))
_INSERT_USAGE = _insert_sql("usage", _USAGE_COLS)
_TRY_LOCK = (
    "INSERT INTO locks (name, owner, expires_at) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE"
    " SET owner = excluded.owner, expires_at = excluded.expires_at"
    " WHERE locks.owner = excluded.owner OR locks.expires_at < ?"
)


def _account(row: Sequence[Any]) -> AccountRecord:
    values = dict(zip(_ACCOUNT_COLS, row, strict=True))
    values["enabled"] = bool(values["enabled"])
    return AccountRecord(**values)


def _usage(row: Sequence[Any]) -> UsageRow:
    values = dict(zip(_USAGE_COLS, row, strict=True))
    values["stream"] = bool(values["stream"])
    return UsageRow(**values)


def _create_private(path: Path) -> None:
    """Make the directory (0700 if new) and the database file (0600) before SQLite sees it."""
    parent = path.parent
    if not parent.exists():
        parent.mkdir(parents=True, exist_ok=True)
        os.chmod(parent, 0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if sys.platform != "win32":  # no fchmod there (Python < 3.13); 0600 means little
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class SQLiteStore:
    """The SQLite `StateStore`. Build it with `SQLiteStore.open(path)`."""

    def __init__(self, conn: sqlite3.Connection, path: Path, clock: Callable[[], float]) -> None:
        self._conn = conn
        self._path = path
        self._clock = clock
        self._mutex = threading.Lock()
        self._data_version: int | None = None
        self._closed = False

    @classmethod
    def open(cls, path: Path, *, clock: Callable[[], float] = time.time) -> SQLiteStore:
        path = Path(path)
        _create_private(path)
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT_MS / 1000
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            _enable_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            _migrate(conn)
        except BaseException:
            conn.close()
            raise
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(f"{path}{suffix}", 0o600)
        return cls(conn, path, clock)

    @property
    def path(self) -> Path:
        return self._path

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"SQLiteStore(path={str(self._path)!r}, {state})"

    # plumbing --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One `BEGIN IMMEDIATE` transaction: committed on success, rolled back on error."""
        with self._mutex:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._mutex:
            return self._conn.execute(sql, params).fetchall()

    # accounts --------------------------------------------------------------------------------
    async def list_accounts(self) -> list[AccountRecord]:
        rows = self._read(f"SELECT {', '.join(_ACCOUNT_COLS)} FROM accounts ORDER BY id")
        return [_account(r) for r in rows]

    async def get_account(self, account_id: str) -> AccountRecord | None:
        sql = f"SELECT {', '.join(_ACCOUNT_COLS)} FROM accounts WHERE id = ?"
        rows = self._read(sql, (account_id,))
        return _account(rows[0]) if rows else None

    async def upsert_account(self, record: AccountRecord) -> None:
        with self._write() as conn:
            conn.execute(_UPSERT_ACCOUNT, astuple(record))

    async def remove_account(self, account_id: str) -> bool:
        with self._write() as conn:
            conn.execute("DELETE FROM tokens WHERE account_id = ?", (account_id,))
            conn.execute("DELETE FROM health WHERE account_id = ?", (account_id,))
            return conn.execute("DELETE FROM accounts WHERE id = ?", (account_id,)).rowcount > 0

    async def set_enabled(self, account_id: str, enabled: bool, reason: str | None) -> bool:
        with self._write() as conn:
            sql = "UPDATE accounts SET enabled = ?, disabled_reason = ? WHERE id = ?"
            return conn.execute(sql, (enabled, reason, account_id)).rowcount > 0

    # tokens ----------------------------------------------------------------------------------
    async def load_tokens(self, account_id: str) -> StoredTokens | None:
        sql = "SELECT data, version, synced_mtime_ns, updated_at FROM tokens WHERE account_id = ?"
        rows = self._read(sql, (account_id,))
        if not rows:
            return None
        data, version, mtime_ns, updated_at = rows[0]
        return StoredTokens(orjson.loads(data), version, mtime_ns, updated_at)

    async def save_tokens(
        self,
        account_id: str,
        data: Mapping[str, Any],
        *,
        expected_version: int | None,
        synced_mtime_ns: int | None = None,
    ) -> int | None:
        text = orjson.dumps(dict(data)).decode()
        now = self._clock()
        with self._write() as conn:
            if expected_version is None:
                sql = (
                    "INSERT INTO tokens (account_id, data, version, synced_mtime_ns, updated_at)"
                    " VALUES (?, ?, 1, ?, ?) ON CONFLICT(account_id) DO NOTHING"
                )
                done = conn.execute(sql, (account_id, text, synced_mtime_ns, now)).rowcount
                return 1 if done else None
            sql = (
                "UPDATE tokens SET data = ?, version = version + 1, synced_mtime_ns = ?,"
                " updated_at = ? WHERE account_id = ? AND version = ?"
            )
            params = (text, synced_mtime_ns, now, account_id, expected_version)
            return expected_version + 1 if conn.execute(sql, params).rowcount else None

    # health ----------------------------------------------------------------------------------
    async def health(self) -> dict[str, Health]:
        rows = self._read(f"SELECT {', '.join(_HEALTH_COLS)} FROM health")
        found = (Health(**dict(zip(_HEALTH_COLS, r, strict=True))) for r in rows)
        return {h.account_id: h for h in found}

    async def put_health(self, health: Health) -> None:
        with self._write() as conn:
            conn.execute(_PUT_HEALTH, astuple(health))

    async def changed(self) -> bool:
        """True when another connection committed since the last call (and on the first)."""
        (version,) = self._read("PRAGMA data_version")[0]
        before, self._data_version = self._data_version, int(version)
        return before is None or before != version

    # locks -----------------------------------------------------------------------------------
    async def try_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        now = self._clock()
        with self._write() as conn:
            return conn.execute(_TRY_LOCK, (name, owner, now + ttl_s, now)).rowcount > 0

    async def unlock(self, name: str, owner: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM locks WHERE name = ? AND owner = ?", (name, owner))

    # slot leases ----------------------------------------------------------------------------
    async def take_slot(
        self,
        account_id: str,
        lease_id: str,
        holder: SlotHolder,
        *,
        cap: int,
        interval_s: float,
        now: float,
        ttl_s: float,
    ) -> SlotTake:
        with self._write() as conn:
            return take_slot_in(conn, account_id, lease_id, holder, (cap, interval_s, now, ttl_s))

    async def free_slot(self, account_id: str, lease_id: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM slots WHERE lease = ?", (lease_id,))

    async def renew_slots(self, holder: SlotHolder, expires_at: float) -> None:
        with self._write() as conn:
            sql = "UPDATE slots SET expires_at = ? WHERE host = ? AND pid = ?"
            conn.execute(sql, (expires_at, holder.host, holder.pid))

    async def slots_in_use(self, now: float) -> dict[str, int]:
        sql = "SELECT account_id, COUNT(*) FROM slots WHERE expires_at >= ? GROUP BY account_id"
        return {str(a): int(n) for a, n in self._read(sql, (now,))}

    # client keys -----------------------------------------------------------------------------
    async def create_client_key(self, record: ClientKeyRecord) -> bool:
        with self._write() as conn:
            return cks.insert_key_in(conn, record)

    async def list_client_keys(self) -> list[ClientKeyRecord]:
        sql = f"SELECT {', '.join(cks.CLIENT_KEY_COLS)} FROM client_keys ORDER BY name"
        return [cks.client_key(r) for r in self._read(sql)]

    async def get_client_key(self, name: str) -> ClientKeyRecord | None:
        sql = f"SELECT {', '.join(cks.CLIENT_KEY_COLS)} FROM client_keys WHERE name = ?"
        return next((cks.client_key(r) for r in self._read(sql, (name,))), None)

    async def client_key_by_hash(self, key_hash: str) -> ClientKeyRecord | None:
        sql = f"SELECT {', '.join(cks.CLIENT_KEY_COLS)} FROM client_keys WHERE key_hash = ?"
        return next((cks.client_key(r) for r in self._read(sql, (key_hash,))), None)

    async def update_client_key(self, record: ClientKeyRecord) -> bool:
        with self._write() as conn:
            return cks.update_key_in(conn, record, self._clock())

    async def set_client_key_state(self, name: str, state: str) -> bool:
        sql = "UPDATE client_keys SET state = ?, updated_at = ? WHERE name = ? AND state != ?"
        with self._write() as conn:
            return conn.execute(sql, (state, self._clock(), name, "revoked")).rowcount > 0

    async def rotate_client_key(self, name: str, key_hash: str, hint: str) -> bool:
        sql = (
            "UPDATE client_keys SET key_hash = ?, hint = ?, updated_at = ?"
            " WHERE name = ? AND state != 'revoked'"
        )
        with self._write() as conn:
            return conn.execute(sql, (key_hash, hint, self._clock(), name)).rowcount > 0

    async def admit_client_key(self, key_id: str, now: float) -> Verdict:
        with self._write() as conn:
            return cks.admit_in(conn, key_id, now)

    # usage log -------------------------------------------------------------------------------
    async def record_usage(
        self, rows: Sequence[UsageRow], *, batch: str | None = None, again: bool = False
    ) -> None:
        # (`batch`, `again` unused: a local transaction that raised was not committed, so a
        # failed write here is never one that was done)
        if rows:
            # a usage row holds plain values: no need for astuple()'s deep copy (~45 µs a row)
            values = [tuple(getattr(r, name) for name in _USAGE_COLS) for r in rows]
            await asyncio.to_thread(self._insert_usage, values, rows)

    def _insert_usage(self, values: list[tuple[Any, ...]], rows: Sequence[UsageRow]) -> None:
        with self._write() as conn:
            conn.executemany(_INSERT_USAGE, values)
            cks.charge_usage_in(conn, rows)  # the tokens of rows naming a client key

    async def usage_count(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM usage")[0][0])

    async def usage_rows(self, *, limit: int = 100) -> list[UsageRow]:
        sql = f"SELECT {', '.join(_USAGE_COLS)} FROM usage ORDER BY id DESC LIMIT ?"
        return [_usage(r) for r in reversed(self._read(sql, (limit,)))]

    async def usage_since(
        self, since: float, *, key: str | None = None, limit: int = 200_000
    ) -> list[UsageRow]:
        params: list[Any] = [since]
        where = "at >= ?"
        if key is not None:
            where += " AND client_key = ?"
            params.append(key)
        sql = f"SELECT {', '.join(_USAGE_COLS)} FROM usage WHERE {where} ORDER BY at DESC LIMIT ?"
        return await asyncio.to_thread(self._usage_rows_in, sql, (*params, max(0, limit)))

    def _read_apart(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """A long read (the usage log), in a thread, on a read-only connection of its own: the
        store's connection (its mutex) stays free for the requests meanwhile."""
        uri = self._path.resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT_MS / 1000)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def _usage_rows_in(self, sql: str, params: Sequence[Any]) -> list[UsageRow]:
        return [_usage(r) for r in reversed(self._read_apart(sql, params))]  # up to 200,000

    async def usage_summary(self, *, since: float, by: str) -> list[UsageSummary]:
        column = USAGE_GROUPS[by]  # KeyError for anything else: never spliced from input
        sql = (
            f"SELECT {column}, COUNT(*), SUM(outcome = 'ok'), COALESCE(SUM(input_tokens), 0),"
            " COALESCE(SUM(output_tokens), 0), AVG(latency_ms) FROM usage WHERE at >= ?"
            f" GROUP BY {column} ORDER BY COUNT(*) DESC, {column} IS NULL, {column}"
        )
        return [
            UsageSummary(
                group=row[0],
                requests=int(row[1]),
                ok=int(row[2]),
                input_tokens=int(row[3]),
                output_tokens=int(row[4]),
                avg_latency_ms=float(row[5]),
            )
            for row in await asyncio.to_thread(self._read_apart, sql, (since,))  # a day: ~1M rows
        ]

    # stored responses ------------------------------------------------------------------------
    async def put_response(self, response_id: str, record: bytes, expires_at: float) -> None:
        now = self._clock()
        with self._write() as conn:
            conn.execute("DELETE FROM responses WHERE expires_at <= ?", (now,))
            conn.execute(
                "INSERT INTO responses (id, record, expires_at) VALUES (?, ?, ?) ON CONFLICT(id)"
                " DO UPDATE SET record = excluded.record, expires_at = excluded.expires_at",
                (response_id, record, expires_at),
            )

    async def get_response(self, response_id: str, now: float) -> bytes | None:
        sql = "SELECT record FROM responses WHERE id = ? AND expires_at > ?"
        rows = self._read(sql, (response_id, now))
        return bytes(rows[0][0]) if rows else None

    async def delete_response(self, response_id: str) -> bool:
        now = self._clock()
        with self._write() as conn:
            sql = "DELETE FROM responses WHERE id = ? RETURNING expires_at"
            gone = conn.execute(sql, (response_id,)).fetchall()
        return bool(gone) and float(gone[0][0]) > now

    # lifecycle -------------------------------------------------------------------------------
    def integrity_ok(self) -> bool:
        rows = self._read("PRAGMA integrity_check")
        return [tuple(r) for r in rows] == [("ok",)]

    def close(self) -> None:
        with self._mutex:
            if not self._closed:
                self._closed = True
                self._conn.close()

    async def aclose(self) -> None:
        self.close()


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL; several processes opening a new file at once may briefly see it busy."""
    for _ in range(100):
        try:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            time.sleep(0.05)
            continue
        if str(mode).lower() == "wal":
            return
        time.sleep(0.05)
    raise sqlite3.OperationalError("could not switch the state database to WAL mode")


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema to `SCHEMA_VERSION` in one transaction (re-reads the version inside it,
    so processes opening a new file together each see it built once)."""
    (current,) = conn.execute("PRAGMA user_version").fetchone()
    if current >= SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        (current,) = conn.execute("PRAGMA user_version").fetchone()
        for version in range(current, SCHEMA_VERSION):
            for statement in _MIGRATIONS[version]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {max(current, SCHEMA_VERSION)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
