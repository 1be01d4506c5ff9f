"""Slot leases in SQLite: `StateStore.take_slot` as statements in one write transaction.

Kept apart from `state/sqlite.py` (which opens the transaction): the leases are rows of
`slots` (one per request in flight, with its holder's host and pid and an expiry) and the last
start of each account is a row of `slot_starts` (the pace).
"""

from __future__ import annotations

import os
import sqlite3
import sys

from ki2api.state.base import SlotHolder, SlotTake

__all__ = ["alive", "take_slot_in"]


def take_slot_in(
    conn: sqlite3.Connection,
    account_id: str,
    lease_id: str,
    holder: SlotHolder,
    limits: tuple[int, float, float, float],
) -> SlotTake:
    """`StateStore.take_slot` inside the caller's write transaction."""
    cap, interval_s, now, ttl_s = limits
    conn.execute("DELETE FROM slots WHERE expires_at < ?", (now,))
    if cap > 0 and _in_use(conn, account_id) >= cap:
        _drop_dead_holders(conn, account_id, holder)
        if _in_use(conn, account_id) >= cap:
            return SlotTake(False, None)
    if interval_s > 0:
        sql = "SELECT last_start FROM slot_starts WHERE account_id = ?"
        row = conn.execute(sql, (account_id,)).fetchone()
        if row is not None and now < float(row[0]) + interval_s:
            return SlotTake(False, float(row[0]) + interval_s - now)
        conn.execute(
            "INSERT INTO slot_starts (account_id, last_start) VALUES (?, ?) ON CONFLICT"
            "(account_id) DO UPDATE SET last_start = excluded.last_start",
            (account_id, now),
        )
    conn.execute(
        "INSERT OR REPLACE INTO slots (lease, account_id, host, pid, expires_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (lease_id, account_id, holder.host, holder.pid, now + ttl_s),
    )
    return SlotTake(True)


def _in_use(conn: sqlite3.Connection, account_id: str) -> int:
    return int(
        conn.execute("SELECT COUNT(*) FROM slots WHERE account_id = ?", (account_id,)).fetchone()[0]
    )


def _drop_dead_holders(conn: sqlite3.Connection, account_id: str, holder: SlotHolder) -> None:
    """Leases of processes of this host that are gone (a killed worker) no longer count."""
    sql = "SELECT DISTINCT pid FROM slots WHERE account_id = ? AND host = ? AND pid != ?"
    pids = [int(r[0]) for r in conn.execute(sql, (account_id, holder.host, holder.pid))]
    dead = [pid for pid in pids if not alive(pid)]
    for pid in dead:
        conn.execute("DELETE FROM slots WHERE host = ? AND pid = ?", (holder.host, pid))


def alive(pid: int) -> bool:
    """Is process `pid` of this host alive? On Windows `os.kill(pid, 0)` would end it rather
    than probe it: there a lease counts until its ttl (`renew_slots` keeps live ones fresh)."""
    if sys.platform == "win32":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True
