"""The SQLite side of client keys: the records, and their counters per window.

`client_key_counters` holds one row per key and period (minute, day, month) for the current
window only: a count of another window is replaced, never summed (client_key_rules.py). Every
function here runs inside the caller's `BEGIN IMMEDIATE` transaction (or a plain read), so an
admission's read-decide-count is atomic across processes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import astuple, fields
from typing import Any

from ki2api.state.base import ClientKeyRecord, UsageRow
from ki2api.state.client_key_rules import (
    PERIODS,
    Counter,
    Limits,
    Verdict,
    decide,
    token_charges,
    window_of,
)

__all__ = [
    "CLIENT_KEY_COLS",
    "MIGRATION",
    "admit_in",
    "charge_usage_in",
    "client_key",
    "insert_key_in",
    "update_key_in",
]

MIGRATION = (
    """CREATE TABLE client_keys (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, key_hash TEXT NOT NULL UNIQUE,
        hint TEXT NOT NULL, state TEXT NOT NULL, rpm INTEGER, tpm INTEGER, daily_tokens INTEGER,
        monthly_requests INTEGER, models TEXT, expires_at REAL, created_at REAL NOT NULL,
        updated_at REAL NOT NULL)""",
    """CREATE TABLE client_key_counters (
        key_id TEXT NOT NULL, period TEXT NOT NULL, window INTEGER NOT NULL,
        requests INTEGER NOT NULL, tokens INTEGER NOT NULL, PRIMARY KEY (key_id, period))""",
)

CLIENT_KEY_COLS = tuple(f.name for f in fields(ClientKeyRecord))
_LIMIT_COLS = ("rpm", "tpm", "daily_tokens", "monthly_requests", "models", "expires_at")

# Add to the counter of the row's window; a counter of an older window starts again from the
# new counts; counts for a window older than the stored one are dropped.
_BUMP = (
    "INSERT INTO client_key_counters (key_id, period, window, requests, tokens)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT(key_id, period) DO UPDATE SET"
    " requests = CASE WHEN window = excluded.window THEN requests + excluded.requests"
    " ELSE excluded.requests END,"
    " tokens = CASE WHEN window = excluded.window THEN tokens + excluded.tokens"
    " ELSE excluded.tokens END,"
    " window = excluded.window WHERE excluded.window >= window"
)


def client_key(row: Sequence[Any]) -> ClientKeyRecord:
    return ClientKeyRecord(**dict(zip(CLIENT_KEY_COLS, row, strict=True)))


def insert_key_in(conn: sqlite3.Connection, record: ClientKeyRecord) -> bool:
    sql = (
        f"INSERT INTO client_keys ({', '.join(CLIENT_KEY_COLS)})"
        f" VALUES ({', '.join('?' * len(CLIENT_KEY_COLS))}) ON CONFLICT DO NOTHING"
    )
    return conn.execute(sql, astuple(record)).rowcount > 0


def update_key_in(conn: sqlite3.Connection, record: ClientKeyRecord, now: float) -> bool:
    sets = ", ".join(f"{c} = ?" for c in _LIMIT_COLS)
    values = [getattr(record, c) for c in _LIMIT_COLS]
    sql = f"UPDATE client_keys SET {sets}, updated_at = ? WHERE id = ? AND state != 'revoked'"
    return conn.execute(sql, (*values, now, record.id)).rowcount > 0


def admit_in(conn: sqlite3.Connection, key_id: str, now: float) -> Verdict:
    """Read the key and its counters, decide, and count the request when it may start."""
    sql = (
        "SELECT state, expires_at, rpm, tpm, daily_tokens, monthly_requests"
        " FROM client_keys WHERE id = ?"
    )
    rows = conn.execute(sql, (key_id,)).fetchall()
    if not rows:
        return Verdict(False, "denied", "it no longer exists")
    state, expires_at, *limits = rows[0]
    if state != "active":
        return Verdict(False, "denied", f"it is {state}")
    if expires_at is not None and expires_at <= now:
        return Verdict(False, "denied", "it has expired")
    sql = "SELECT period, window, requests, tokens FROM client_key_counters WHERE key_id = ?"
    counters = {p: Counter(w, r, t) for p, w, r, t in conn.execute(sql, (key_id,))}
    verdict = decide(Limits(*limits), counters, now)
    if verdict.ok:
        conn.executemany(_BUMP, [(key_id, p, window_of(p, now), 1, 0) for p in PERIODS])
    return verdict


def charge_usage_in(conn: sqlite3.Connection, rows: Iterable[UsageRow]) -> None:
    """Add each row's tokens to the minute and day counters of the key it names (rows of
    API_KEY or of unknown keys name none: nothing happens for them)."""
    bumps = [(period, window, tokens, key) for key, period, window, tokens in token_charges(rows)]
    if bumps:
        conn.executemany(_CHARGE, bumps)


# the SELECT's WHERE keeps SQLite from reading the upsert's ON as a join constraint
_CHARGE = _BUMP.replace(
    "VALUES (?, ?, ?, ?, ?)", "SELECT id, ?, ?, 0, ? FROM client_keys WHERE name = ?"
)
