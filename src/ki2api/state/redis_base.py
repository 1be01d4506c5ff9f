"""What every part of `RedisStore` shares: the client, the key prefix, the scripts, the field
encoding of records, the version counter behind `changed()`, and the URL (parsed, masked).

A record (an account, a client key) is a Redis hash with one field per dataclass field, each
value JSON (orjson: floats round-trip exactly, None is `null`), so a script can set one field
(`enabled`, `state`) without decoding the rest.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

__all__ = ["DEFAULT_PREFIX", "RedisBase", "RedisURL", "decode_record", "encode_fields"]

DEFAULT_PREFIX = "ki2api:"
R = TypeVar("R")


@dataclass(frozen=True)
class RedisURL:
    """`redis://[user:password@]host[:port][/db][?prefix=name:]` (or `rediss://`: TLS): the
    URL redis-py connects with (password included: never shown) and the key prefix."""

    url: str
    prefix: str
    masked: str  # scheme://host:port/db: what logs and messages show

    def __repr__(self) -> str:
        return f"RedisURL({self.masked!r}, prefix={self.prefix!r})"


def parse_redis_url(text: str) -> RedisURL:
    """The store URL, checked; ValueError with a message that never holds the password."""
    try:
        parts = urllib.parse.urlsplit(text.strip())
        port = parts.port
    except ValueError:
        raise ValueError("the Redis URL is malformed") from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError("a Redis store URL is redis://host[:port][/db] or rediss://…")
    db = parts.path.strip("/") or "0"
    if not db.isdigit():
        raise ValueError(f"the Redis database must be a number, not {db!r}")
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), DEFAULT_PREFIX)
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "prefix"])
    url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"/{db}", rest, ""))
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    masked = f"{parts.scheme}://{host}:{port or 6379}/{db}"
    return RedisURL(url, prefix, masked)


def encode_fields(record: Any, skip: frozenset[str] = frozenset()) -> list[bytes | str]:
    """field, value, field, value, ... of a dataclass record (values as JSON)."""
    out: list[bytes | str] = []
    for f in fields(record):
        if f.name not in skip:
            out += [f.name, orjson.dumps(getattr(record, f.name))]
    return out


def decode_record(cls: Callable[..., R], names: Sequence[str], flat: Sequence[Any]) -> R:
    """A record from a flat field/value list (a script's HGETALL) or a mapping."""
    pairs: Mapping[Any, Any] = dict(zip(flat[::2], flat[1::2], strict=True))
    values = {}
    for name in names:  # a field the record had not when it was written keeps its default
        raw = pairs.get(name.encode())
        if raw is not None:
            values[name] = orjson.loads(raw)
    return cls(**values)


class RedisBase:
    """The shared plumbing of the Redis store's parts."""

    def __init__(
        self,
        client: aioredis.Redis,
        where: RedisURL,
        *,
        clock: Callable[[], float] = time.time,
        usage_max_rows: int = 1_000_000,
    ) -> None:
        self._r = client
        self._where = where
        self._p = where.prefix
        self._clock = clock
        self._usage_max = usage_max_rows
        self._seen: int | None = None  # the version counter as this object last saw it
        self._scripts: dict[str, AsyncScript] = {}
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"RedisStore({self._where.masked!r}, prefix={self._p!r}, {state})"

    @property
    def where(self) -> RedisURL:
        return self._where

    def _k(self, *parts: str) -> str:
        return self._p + ":".join(parts)

    async def _run(self, script: str, keys: Sequence[str] = (), args: Sequence[Any] = ()) -> Any:
        """Run a Lua script (EVALSHA; loaded on first use or after a server restart)."""
        found = self._scripts.get(script)
        if found is None:
            found = self._scripts[script] = self._r.register_script(script)
        return await found(keys=list(keys), args=list(args))

    def _wrote(self, version: int) -> None:
        """Our own write took the version counter to `version`: not news for `changed()`,
        unless someone else wrote in between (then the next `changed()` says so)."""
        if self._seen is not None and int(version) == self._seen + 1:
            self._seen = int(version)

    async def changed(self) -> bool:
        """One GET of the version counter, which every write of accounts, tokens or health
        increments: True when it moved since the last call (and on the first)."""
        raw = await self._r.get(self._k("version"))
        version = int(raw or 0)
        before, self._seen = self._seen, version
        return before is None or before != version

    async def ping(self) -> None:
        """Raise when the server cannot be reached (redis.exceptions.ConnectionError)."""
        await self._r.ping()

    async def drop_idle_connections(self) -> None:
        """Forget the pooled connections not in use (after an outage their sockets are dead:
        the next call connects afresh instead of failing on one)."""
        await self._r.connection_pool.disconnect(inuse_connections=False)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._r.aclose()
