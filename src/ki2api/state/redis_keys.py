"""The client keys of `RedisStore`: records, the name and hash indexes, and the counters.

Admission is one script (state/redis_scripts.ADMIT_KEY): it reads the key and its counters,
checks the limits and counts the request, atomically for every replica. When it refuses, the
verdict is worded by `client_key_rules.decide` from the very numbers the script saw, so SQLite
and Redis give the same verdicts. Tokens are charged by the usage script (state/redis_usage.py).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import orjson

from ki2api.state import redis_scripts as lua
from ki2api.state.base import ClientKeyRecord
from ki2api.state.client_key_rules import (
    PERIODS,
    Counter,
    Limits,
    Verdict,
    decide,
    window_of,
)
from ki2api.state.redis_base import RedisBase, decode_record, encode_fields

__all__ = ["RedisClientKeys", "counters_of"]

_KEY_COLS = tuple(f.name for f in fields(ClientKeyRecord))
_LIMIT_COLS = ("rpm", "tpm", "daily_tokens", "monthly_requests", "models", "expires_at")


def counters_of(flat: list[Any]) -> dict[str, Counter]:
    """The counters hash (period:w / :r / :t), as client_key_rules' Counters."""
    raw = {bytes(k).decode(): int(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
    return {
        p: Counter(raw[f"{p}:w"], raw.get(f"{p}:r", 0), raw.get(f"{p}:t", 0))
        for p in PERIODS
        if f"{p}:w" in raw
    }


def _limit(raw: Any) -> int | None:
    value = orjson.loads(raw) if raw is not None else None
    return None if value is None else int(value)


class RedisClientKeys(RedisBase):
    """`StateStore`'s client-key methods on Redis."""

    async def create_client_key(self, record: ClientKeyRecord) -> bool:
        keys = (self._k("ck", record.id), self._k("ck_names"), self._k("ck_hashes"))
        args = (record.id, record.name, record.key_hash, *encode_fields(record))
        return bool(await self._run(lua.CREATE_KEY, keys, args))

    async def list_client_keys(self) -> list[ClientKeyRecord]:
        found = await self._run(lua.LIST_RECORDS, [self._k("ck_names")], [self._k("ck", "")])
        records = [decode_record(ClientKeyRecord, _KEY_COLS, flat) for flat in found]
        return sorted(records, key=lambda r: r.name)

    async def _by_index(self, index: str, value: str) -> ClientKeyRecord | None:
        flat = await self._run(lua.GET_BY_INDEX, [self._k(index)], [value, self._k("ck", "")])
        return decode_record(ClientKeyRecord, _KEY_COLS, flat) if flat else None

    async def get_client_key(self, name: str) -> ClientKeyRecord | None:
        return await self._by_index("ck_names", name)

    async def client_key_by_hash(self, key_hash: str) -> ClientKeyRecord | None:
        return await self._by_index("ck_hashes", key_hash)

    async def update_client_key(self, record: ClientKeyRecord) -> bool:
        args: list[Any] = []
        for name in _LIMIT_COLS:
            args += [name, orjson.dumps(getattr(record, name))]
        args += ["updated_at", orjson.dumps(self._clock())]
        return bool(await self._run(lua.UPDATE_KEY, [self._k("ck", record.id)], args))

    async def set_client_key_state(self, name: str, state: str) -> bool:
        args = (name, self._p, orjson.dumps(state), orjson.dumps(self._clock()))
        return bool(await self._run(lua.SET_KEY_STATE, [self._k("ck_names")], args))

    async def rotate_client_key(self, name: str, key_hash: str, hint: str) -> bool:
        keys = (self._k("ck_names"), self._k("ck_hashes"))
        args = (
            name,
            self._p,
            key_hash,
            orjson.dumps(key_hash),
            orjson.dumps(hint),
            orjson.dumps(self._clock()),
        )
        return bool(await self._run(lua.ROTATE_KEY, keys, args))

    async def admit_client_key(self, key_id: str, now: float) -> Verdict:
        keys = (self._k("ck", key_id), self._k("ck_count", key_id))
        args = (repr(float(now)), *(window_of(p, now) for p in PERIODS))
        answer = await self._run(lua.ADMIT_KEY, keys, args)
        kind = bytes(answer[0]).decode()
        if kind == "ok":
            return Verdict(True)
        if kind == "gone":
            return Verdict(False, "denied", "it no longer exists")
        if kind == "state":
            return Verdict(False, "denied", f"it is {orjson.loads(answer[1])}")
        if kind == "expired":
            return Verdict(False, "denied", "it has expired")
        limits = Limits(*(_limit(raw) for raw in answer[1:5]))
        verdict = decide(limits, counters_of(answer[5:]), now)
        # the script and decide() read the same numbers: they agree; never admit uncounted
        return verdict if not verdict.ok else Verdict(False, "rate", "over its limit", 1.0)

    # migration (cli/store_commands.py): not part of StateStore --------------------------------
    async def seed_key_counters(self, key_id: str, counters: dict[str, Counter]) -> bool:
        """Set a key's counters when it has none yet (copying twice never counts twice)."""
        mapping: dict[str, int] = {}
        for period, c in counters.items():
            mapping |= {f"{period}:w": c.window, f"{period}:r": c.requests, f"{period}:t": c.tokens}
        key = self._k("ck_count", key_id)
        if not mapping or await self._r.exists(key):
            return False
        await self._r.hset(key, mapping=mapping)  # type: ignore[arg-type]
        return True
