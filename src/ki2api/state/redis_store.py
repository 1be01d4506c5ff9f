"""`RedisStore`: the `StateStore` that several gateway replicas share (KI2API_STORE=redis://…).

Every key starts with the store's prefix (`ki2api:` unless the URL says `?prefix=`), so several
deployments can share one server. What lives where:
  version            a counter every write of accounts, tokens or health increments (changed())
  accounts           set of account ids; account:ID a hash, one JSON value per field
  tokens:ID          hash: data (the token JSON), version, synced_mtime_ns, updated_at
  health             hash: account id -> the Health fields as a JSON list
  lock:NAME          "expires_at\\nowner", with a PX time-to-live
  slots:ACCOUNT …    slot leases (state/redis_scripts.py says how)
  ck:ID, ck_names, ck_hashes, ck_count:ID   client keys (state/redis_keys.py)
  usage              the usage stream (state/redis_usage.py)
  response:ID        hash: e (expires_at), r (the record), with a PX time-to-live
Compare-and-set saves, locks, leases and admissions are Lua scripts (state/redis_scripts.py):
one atomic step each for every replica. Times come from the store's clock, as in SQLite; the
time-to-lives only free what a dead replica left behind.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple, fields
from typing import Any

import orjson
import redis.asyncio as aioredis

from ki2api.state import redis_scripts as lua
from ki2api.state.base import (
    AccountRecord,
    Health,
    SlotHolder,
    SlotTake,
    StoredTokens,
)
from ki2api.state.redis_base import RedisURL, decode_record, encode_fields, parse_redis_url
from ki2api.state.redis_keys import RedisClientKeys
from ki2api.state.redis_usage import RedisUsage
from ki2api.state.slot_leases import alive

__all__ = ["RedisStore"]

_ACCOUNT_COLS = tuple(f.name for f in fields(AccountRecord))
_KEPT_ON_UPSERT = frozenset({"id", "machine_id", "created_at"})
_MIN_TTL_MS = 1_000
_MAX_CONNECTIONS = 64
_WAIT_S = 10.0


def _ttl_ms(seconds: float) -> int:
    return max(_MIN_TTL_MS, math.ceil(seconds * 1000))


def _text(value: Any) -> str:
    return bytes(value).decode() if isinstance(value, bytes | bytearray) else str(value)


class RedisStore(RedisClientKeys, RedisUsage):
    """The Redis `StateStore`. Build it with `RedisStore.open(url)`."""

    @classmethod
    def open(
        cls,
        url: str | RedisURL,
        *,
        clock: Callable[[], float] = time.time,
        usage_max_rows: int = 1_000_000,
    ) -> RedisStore:
        """A store on the server of `url` (nothing is connected before the first call)."""
        where = url if isinstance(url, RedisURL) else parse_redis_url(url)
        # at most _MAX_CONNECTIONS per process: a burst of requests waits for one, rather than
        # opening hundreds (Redis' maxclients is shared by every replica)
        pool = aioredis.BlockingConnectionPool.from_url(
            where.url,
            max_connections=_MAX_CONNECTIONS,
            timeout=_WAIT_S,
            socket_timeout=_WAIT_S,
            socket_connect_timeout=_WAIT_S,
            health_check_interval=30,
        )
        client = aioredis.Redis.from_pool(pool)  # closes the pool with the client
        return cls(client, where, clock=clock, usage_max_rows=usage_max_rows)

    # accounts --------------------------------------------------------------------------------
    async def list_accounts(self) -> list[AccountRecord]:
        found = await self._run(lua.LIST_RECORDS, [self._k("accounts")], [self._k("account", "")])
        records = [decode_record(AccountRecord, _ACCOUNT_COLS, flat) for flat in found]
        return sorted(records, key=lambda r: r.id)

    async def get_account(self, account_id: str) -> AccountRecord | None:
        found = await self._r.hgetall(self._k("account", account_id))
        if not found:
            return None
        flat = [x for pair in found.items() for x in pair]
        return decode_record(AccountRecord, _ACCOUNT_COLS, flat)

    async def upsert_account(self, record: AccountRecord) -> None:
        kept = [x for n in sorted(_KEPT_ON_UPSERT) for x in (n, orjson.dumps(getattr(record, n)))]
        rest = encode_fields(record, skip=_KEPT_ON_UPSERT)
        keys = (self._k("account", record.id), self._k("accounts"), self._k("version"))
        args = (record.id, len(_KEPT_ON_UPSERT), *kept, *rest)
        self._wrote(await self._run(lua.UPSERT, keys, args))

    async def remove_account(self, account_id: str) -> bool:
        keys = (
            self._k("account", account_id),
            self._k("accounts"),
            self._k("tokens", account_id),
            self._k("health"),
            self._k("version"),
        )
        gone, version = await self._run(lua.REMOVE_ACCOUNT, keys, [account_id])
        self._wrote(version)
        return bool(gone)

    async def set_enabled(self, account_id: str, enabled: bool, reason: str | None) -> bool:
        keys = (self._k("account", account_id), self._k("version"))
        args = ("enabled", orjson.dumps(enabled), "disabled_reason", orjson.dumps(reason))
        done, version = await self._run(lua.SET_IF_EXISTS, keys, args)
        if done:
            self._wrote(version)
        return bool(done)

    # tokens ----------------------------------------------------------------------------------
    async def load_tokens(self, account_id: str) -> StoredTokens | None:
        found = await self._r.hgetall(self._k("tokens", account_id))
        if not found:
            return None
        mtime = found.get(b"synced_mtime_ns") or b""
        return StoredTokens(
            orjson.loads(found[b"data"]),
            int(found[b"version"]),
            int(mtime) if mtime else None,
            float(found[b"updated_at"]),
        )

    async def save_tokens(
        self,
        account_id: str,
        data: Mapping[str, Any],
        *,
        expected_version: int | None,
        synced_mtime_ns: int | None = None,
    ) -> int | None:
        keys = (self._k("tokens", account_id), self._k("version"))
        args = (
            "" if expected_version is None else str(int(expected_version)),
            orjson.dumps(dict(data)),
            "" if synced_mtime_ns is None else str(int(synced_mtime_ns)),
            repr(float(self._clock())),
        )
        saved, version = await self._run(lua.SAVE_TOKENS, keys, args)
        if not saved:
            return None
        self._wrote(version)
        return int(saved)

    # health ----------------------------------------------------------------------------------
    async def health(self) -> dict[str, Health]:
        found = await self._r.hgetall(self._k("health"))
        return {_text(k): Health(*orjson.loads(v)) for k, v in found.items()}

    async def put_health(self, health: Health) -> None:
        async with self._r.pipeline(transaction=True) as tx:
            tx.hset(self._k("health"), health.account_id, orjson.dumps(astuple(health)))
            tx.incr(self._k("version"))
            _, version = await tx.execute()
        self._wrote(version)

    # locks -----------------------------------------------------------------------------------
    async def try_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        now = self._clock()
        args = (owner, repr(float(now)), repr(float(now + ttl_s)), _ttl_ms(ttl_s))
        return bool(await self._run(lua.TRY_LOCK, [self._k("lock", name)], args))

    async def unlock(self, name: str, owner: str) -> None:
        await self._run(lua.UNLOCK, [self._k("lock", name)], [owner])

    # slot leases -----------------------------------------------------------------------------
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
        me = f"{holder.host}\t{holder.pid}"
        args = [self._p, account_id, lease_id, me, cap, repr(float(interval_s))]
        args += [repr(float(now)), repr(float(now + ttl_s))]
        answer = await self._run(lua.TAKE_SLOT, (), args)
        if answer[0] == b"full":
            dead = _dead_holders(answer[1:], holder)
            if dead:  # a killed worker of this host: its leases no longer count
                await self._run(lua.DROP_HOLDERS, (), [self._p, *dead])
                answer = await self._run(lua.TAKE_SLOT, (), args)
        if answer[0] == b"taken":
            return SlotTake(True)
        if answer[0] == b"wait":
            return SlotTake(False, float(answer[1]) + interval_s - now)
        return SlotTake(False, None)

    async def free_slot(self, account_id: str, lease_id: str) -> None:
        await self._run(lua.FREE_SLOT, (), [self._p, lease_id])

    async def renew_slots(self, holder: SlotHolder, expires_at: float) -> None:
        me = f"{holder.host}\t{holder.pid}"
        await self._run(lua.RENEW_SLOTS, (), [self._p, me, repr(float(expires_at))])

    async def slots_in_use(self, now: float) -> dict[str, int]:
        flat = await self._run(lua.SLOTS_IN_USE, (), [self._p, repr(float(now))])
        return {_text(a): int(n) for a, n in zip(flat[::2], flat[1::2], strict=True)}

    # stored responses ------------------------------------------------------------------------
    async def put_response(self, response_id: str, record: bytes, expires_at: float) -> None:
        left = expires_at - self._clock()
        key = self._k("response", response_id)
        async with self._r.pipeline(transaction=True) as tx:
            tx.delete(key)
            tx.hset(key, mapping={"e": repr(float(expires_at)), "r": bytes(record)})
            tx.pexpire(key, _ttl_ms(left))
            await tx.execute()

    async def get_response(self, response_id: str, now: float) -> bytes | None:
        found: Any = await self._r.hmget(self._k("response", response_id), ["e", "r"])
        expires, record = found
        if expires is None or record is None or float(expires) <= now:
            return None
        return bytes(record)

    async def delete_response(self, response_id: str) -> bool:
        key = self._k("response", response_id)
        async with self._r.pipeline(transaction=True) as tx:
            tx.hget(key, "e")
            tx.delete(key)
            expires, _ = await tx.execute()
        return expires is not None and float(expires) > self._clock()


def _dead_holders(tags: Sequence[Any], me: SlotHolder) -> list[str]:
    """The holders ("host\\tpid") among `tags` that are processes of this host that are gone."""
    dead = set()
    for raw in tags:
        host, _, pid = _text(raw).rpartition("\t")
        if host == me.host and pid.isdigit() and int(pid) != me.pid and not alive(int(pid)):
            dead.add(f"{host}\t{pid}")
    return sorted(dead)
