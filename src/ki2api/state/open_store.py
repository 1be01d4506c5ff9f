"""Which state store a gateway, a worker or a CLI command opens: `open_store(settings)`.

KI2API_STORE picks it: empty, SQLite in the data directory (`data/ki2api.sqlite3`, the
default); `sqlite:PATH`, that SQLite file; `redis://…` or `rediss://…` (TLS), Redis
(state/redis_store.py): `redis://[:password@]host[:port][/db][?prefix=name:]`. What is shown of
a store (`StoreSpec.shown`) never holds a Redis password.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from redis.exceptions import RedisError

from ki2api.metrics import STORE_UP
from ki2api.settings import Settings
from ki2api.state.base import StateStore
from ki2api.state.redis_base import RedisURL, parse_redis_url
from ki2api.state.redis_store import RedisStore
from ki2api.state.resilient_store import ResilientStore
from ki2api.state.sqlite import SQLiteStore

__all__ = [
    "STORE_ERRORS",
    "STORE_FILE_NAME",
    "StoreSpec",
    "open_gateway_store",
    "open_spec",
    "open_store",
    "parse_store",
    "store_spec",
]

STORE_FILE_NAME = "ki2api.sqlite3"
# What a store's calls raise when it cannot be used (a file, or a server away); their messages
# hold no password (redis-py names the host and port only).
STORE_ERRORS: tuple[type[Exception], ...] = (OSError, sqlite3.Error, RedisError)


@dataclass(frozen=True)
class StoreSpec:
    """A store to open: a SQLite file (`path`) or a Redis server (`redis`)."""

    path: Path | None = None
    redis: RedisURL | None = None

    @property
    def kind(self) -> str:
        return "redis" if self.redis is not None else "sqlite"

    @property
    def shown(self) -> str:
        """For messages and logs: the file, or the masked URL (no password) and the prefix."""
        if self.redis is not None:
            return f"{self.redis.masked} (prefix {self.redis.prefix!r})"
        return str(self.path)


def parse_store(text: str | None, data_dir: Path) -> StoreSpec:
    """`sqlite:PATH`, `redis[s]://…`, or empty (SQLite in `data_dir`); ValueError otherwise (the
    message never holds the text: it may hold a password)."""
    raw = (text or "").strip()
    if not raw:
        return StoreSpec(path=data_dir / STORE_FILE_NAME)
    if raw.startswith("sqlite:"):
        path = raw.removeprefix("sqlite:").removeprefix("//")
        if not path:
            raise ValueError("sqlite:PATH needs a path")
        return StoreSpec(path=Path(path).expanduser())
    if raw.startswith(("redis://", "rediss://")):
        return StoreSpec(redis=parse_redis_url(raw))
    raise ValueError("a store is sqlite:PATH, redis://… or rediss://…")


def store_spec(settings: Settings) -> StoreSpec:
    """The store KI2API_STORE names (ValueError: it cannot be used)."""
    return parse_store(settings.store, settings.data_dir)


def open_spec(spec: StoreSpec) -> StateStore:
    if spec.redis is not None:
        return RedisStore.open(spec.redis)
    assert spec.path is not None
    return SQLiteStore.open(spec.path)


def open_store(settings: Settings) -> StateStore:
    """The store of a CLI command (a Redis one connects on its first call)."""
    return open_spec(store_spec(settings))


def open_gateway_store(settings: Settings) -> StateStore:
    """The gateway's store: a Redis one serves with what it knows while the server is away
    (state/resilient_store.py); a SQLite one as it is."""
    store = open_store(settings)
    if isinstance(store, RedisStore):
        return ResilientStore(store)
    STORE_UP.set(1)  # a file of this host: never "away"
    return store
