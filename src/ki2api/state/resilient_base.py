"""What `ResilientStore` (state/resilient_store.py) is built on: the state it keeps while Redis
is away, `_call` (every call to the `RedisStore` goes through it: while the server is known to
be away it fails at once with `StoreAway`; a connection error or a timeout turns the store
"away" and starts the probe), and the calls that need no memory of their own: client keys (the
door keeps the known ones: server/client_keys.py), their admission, and the usage log (the
usage log keeps its rows and retries).

While the store is away, a key's admission lets the request in (fail open, one log line per
outage), counting it in this process against the key's requests per minute (the last record
of the key read here); its other limits are not counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ki2api.state.base import (
    AccountRecord,
    ClientKeyRecord,
    Health,
    StoredTokens,
    UsageRow,
    UsageSummary,
)
from ki2api.state.client_key_rules import OK, Counter, Limits, Verdict, decide, window_of
from ki2api.state.redis_store import RedisStore
from ki2api.state.store_status import StoreAway, StoreStatus

__all__ = ["AWAY_ERRORS", "DueTokens", "ResilientBase"]

_log = logging.getLogger(__name__)
AWAY_ERRORS = (RedisConnectionError, RedisTimeoutError)  # BusyLoadingError is a ConnectionError
_MAX_KEYS = 10_000
P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class DueTokens:
    """A token save kept while the store is away."""

    data: Mapping[str, Any]
    base: int | None  # the version in the store these tokens follow
    synced_mtime_ns: int | None


class ResilientBase:
    """The plumbing and the client-key and usage calls of `ResilientStore`."""

    def __init__(
        self,
        inner: RedisStore,
        *,
        status: StoreStatus | None = None,
        probe_s: float = 0.5,  # 0: no probe (tests call `recover`)
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._inner = inner
        self.status = status or StoreStatus("redis", clock=clock)
        self._probe_s = probe_s
        self._clock = clock
        self._probe: asyncio.Task[None] | None = None
        self._reload = False  # changed() says True once after an outage
        self._accounts: list[AccountRecord] | None = None
        self._health: dict[str, Health] | None = None
        self._tokens: dict[str, StoredTokens] = {}
        self._slots: dict[str, int] = {}
        self._due_tokens: dict[str, DueTokens] = {}
        self._due_enabled: dict[str, tuple[bool, str | None]] = {}
        self._due_responses: dict[str, tuple[bytes, float]] = {}
        self._due_frees: set[tuple[str, str]] = set()  # slot leases (account id, lease id)
        self._said: set[str] = set()  # what this outage already logged
        self._keys: dict[str, ClientKeyRecord] = {}  # by id: the last record read
        self._admitted: dict[str, Counter] = {}  # by key id: its minute while away

    def __repr__(self) -> str:
        return f"Resilient{self._inner!r}"

    @property
    def inner(self) -> RedisStore:
        return self._inner

    # the plumbing ----------------------------------------------------------------------------
    async def _call(
        self, op: str, fn: Callable[P, Awaitable[R]], *args: P.args, **kw: P.kwargs
    ) -> R:
        if not self.status.ok:
            self.status.failed(op)
            raise StoreAway(op)
        try:
            return await fn(*args, **kw)
        except AWAY_ERRORS as exc:
            self._lost(op, exc)
            raise StoreAway(op) from None

    def _lost(self, op: str, exc: Exception) -> None:
        if self.status.failed(op):
            self._said.clear()
            self._admitted.clear()  # this outage's own count
            _log.warning(
                "state store %s unreachable (%s: %s): serving with what this process knows "
                "until it is back",
                self._inner.where.masked,
                op,
                type(exc).__name__,
            )
        if self._probe_s > 0 and (self._probe is None or self._probe.done()):
            self._probe = asyncio.get_running_loop().create_task(self._wait_back())

    def _say_once(self, what: str, message: str, *args: object) -> None:
        if what not in self._said:
            self._said.add(what)
            _log.warning(message, *args)

    def _wait_back(self) -> Coroutine[Any, Any, None]:
        raise NotImplementedError

    # client keys -----------------------------------------------------------------------------
    async def create_client_key(self, record: ClientKeyRecord) -> bool:
        return bool(await self._call("keys", self._inner.create_client_key, record))

    async def list_client_keys(self) -> list[ClientKeyRecord]:
        return await self._call("keys", self._inner.list_client_keys)

    async def get_client_key(self, name: str) -> ClientKeyRecord | None:
        return await self._call("keys", self._inner.get_client_key, name)

    async def client_key_by_hash(self, key_hash: str) -> ClientKeyRecord | None:
        found = await self._call("keys", self._inner.client_key_by_hash, key_hash)
        if found is not None:
            if len(self._keys) >= _MAX_KEYS:
                self._keys.clear()
            self._keys[found.id] = found
        return found

    async def update_client_key(self, record: ClientKeyRecord) -> bool:
        return bool(await self._call("keys", self._inner.update_client_key, record))

    async def set_client_key_state(self, name: str, state: str) -> bool:
        return bool(await self._call("keys", self._inner.set_client_key_state, name, state))

    async def rotate_client_key(self, name: str, key_hash: str, hint: str) -> bool:
        return bool(await self._call("keys", self._inner.rotate_client_key, name, key_hash, hint))

    async def admit_client_key(self, key_id: str, now: float) -> Verdict:
        try:
            return await self._call("admission", self._inner.admit_client_key, key_id, now)
        except StoreAway:
            self._say_once(
                "admission",
                "state store away: client keys are let in, counted against their requests "
                "per minute in this process only",
            )
            return self._admit_here(key_id, now)

    def _admit_here(self, key_id: str, now: float) -> Verdict:
        """The key's requests per minute, counted in this process while the store is away."""
        record = self._keys.get(key_id)
        if record is None or record.rpm is None:
            return OK
        window = window_of("minute", now)
        seen = self._admitted.get(key_id)
        if seen is None or seen.window != window:
            seen = Counter(window)
        verdict = decide(Limits(rpm=record.rpm), {"minute": seen}, now)
        if verdict.ok:
            if len(self._admitted) >= _MAX_KEYS:
                self._admitted.clear()
            self._admitted[key_id] = Counter(window, seen.requests + 1)
        return verdict

    # usage log -------------------------------------------------------------------------------
    async def record_usage(
        self, rows: Sequence[UsageRow], *, batch: str | None = None, again: bool = False
    ) -> None:
        await self._call("usage", self._inner.record_usage, rows, batch=batch, again=again)

    async def usage_count(self) -> int:
        return int(await self._call("usage", self._inner.usage_count))

    async def usage_rows(self, *, limit: int = 100) -> list[UsageRow]:
        return await self._call("usage", self._inner.usage_rows, limit=limit)

    async def usage_summary(self, *, since: float, by: str) -> list[UsageSummary]:
        return await self._call("usage", self._inner.usage_summary, since=since, by=by)

    async def usage_since(
        self, since: float, *, key: str | None = None, limit: int = 200_000
    ) -> list[UsageRow]:
        return await self._call("usage", self._inner.usage_since, since, key=key, limit=limit)
