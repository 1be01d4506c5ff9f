"""Is the state store reachable? One `StoreStatus` per gateway process says so, since when, and
how often a call failed; `/health` shows it and `ki2api_store_up` / `ki2api_store_errors`
count it (metrics.py). Only a Redis store can be away (state/resilient_store.py); a SQLite
store is a file of this host, whose errors are not an outage: its status stays up.

`StoreAway` is what a call raises when the server cannot be reached (or is known to be away,
while the resilient store waits for it): callers that have something better to do than fail
(the slot gate, the refresh lock, the client-key door) catch it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.exceptions import ConnectionError as RedisConnectionError

from ki2api.metrics import STORE_FAILURES, STORE_UP

__all__ = ["StoreAway", "StoreStatus", "store_view"]


class StoreAway(RedisConnectionError):
    """The state store's server is away (a Redis `ConnectionError`, so every handler of store
    errors handles it too)."""

    def __init__(self, op: str) -> None:
        super().__init__(f"the state store is unreachable ({op})")
        self.op = op


class StoreStatus:
    """Reachable or not, since when (epoch seconds), and the errors counted by operation."""

    def __init__(self, kind: str, *, clock: Callable[[], float] = time.time) -> None:
        self.kind = kind
        self._clock = clock
        self.ok = True
        self.since = clock()
        self.last_error_at: float | None = None
        self.errors = 0
        STORE_UP.set(1)

    def failed(self, op: str) -> bool:
        """A call failed because the server is away: True when this starts an outage."""
        now = self._clock()
        self.errors += 1
        self.last_error_at = now
        STORE_FAILURES.labels(op).inc()
        if not self.ok:
            return False
        self.ok, self.since = False, now
        STORE_UP.set(0)
        return True

    def recovered(self) -> float:
        """The server answers again: how long it was away (0.0 when it was not)."""
        now = self._clock()
        if self.ok:
            return 0.0
        away = now - self.since
        self.ok, self.since = True, now
        STORE_UP.set(1)
        return away

    def view(self) -> dict[str, object]:
        """What /health shows (to a client with an API key)."""
        return {
            "kind": self.kind,
            "ok": self.ok,
            "since": round(self.since, 3),
            "errors": self.errors,
            "last_error_at": None if self.last_error_at is None else round(self.last_error_at, 3),
        }


def store_view(store: object) -> dict[str, object]:
    """/health's `store`: the status of a store that can be away, else (SQLite) always up."""
    status = getattr(store, "status", None)
    if isinstance(status, StoreStatus):
        return status.view()
    return {"kind": "sqlite", "ok": True}
