"""Client keys of the store (`ki2api keys`) at the door: who the request is, and may it start.

`ClientKeyFinder` (at the front door) looks a presented `sk-ki2api-…` key up by its SHA-256
(unless the request presents `API_KEY`, which wins and stays unlimited) and puts the record in
`scope["state"]["client_key"]`; a worker keeps an active key it found for `CACHE_S` (a disable
or revoke is seen by every worker within that time; a chat request's admission reads the key's
state in the store anyway; an enable counts at once). `authorize` (server/chat.py) refuses a
key that is not usable (401); `admit`, once the model is known, checks the key's model patterns
(403) and asks the store to count the request against its limits (429 with retry-after, or 429
insufficient_quota). While a Redis store is away, a key this worker knows stays usable and one
it does not know gets a 503 to retry (state/resilient_store.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.types import Scope

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.server.auth import identity, presented_keys
from ki2api.state.base import ClientKeyRecord, StateStore
from ki2api.state.client_key_rules import (
    Verdict,
    hash_key,
    looks_like_key,
    model_allowed,
    parse_models,
)
from ki2api.state.store_status import StoreAway

__all__ = [
    "CACHE_S",
    "ClientKeyFinder",
    "admit",
    "client_key_of",
    "refuse_if_store_away",
    "refuse_unusable",
]

CACHE_S = 0.5
_CACHE_MAX = 10_000


def client_key_of(scope: Scope) -> ClientKeyRecord | None:
    found = (scope.get("state") or {}).get("client_key")
    return found if isinstance(found, ClientKeyRecord) else None


class ClientKeyFinder:
    """Finds the store key a request presents (see the module's docstring)."""

    def __init__(
        self,
        *,
        store: Callable[[], StateStore | None],
        keys: tuple[str, ...],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._keys = keys
        self._clock = clock
        self._cache: dict[str, tuple[ClientKeyRecord, float]] = {}

    async def note(self, scope: Scope) -> None:
        """Put the store key the request presents (if any, and known) in its scope's state."""
        try:
            record = await self._find(scope)
        except StoreAway:  # an unknown key while the store is away: `authorize` says 503
            scope.setdefault("state", {})["client_key_away"] = True
            record = None
        if record is not None:
            scope.setdefault("state", {})["client_key"] = record

    async def _find(self, scope: Scope) -> ClientKeyRecord | None:
        if identity(scope, self._keys).index is not None:
            return None  # API_KEY, which wins
        given = [k for k in presented_keys(Headers(scope=scope)) if looks_like_key(k)]
        if not given:
            return None
        store = self._store()
        if store is None:
            return None
        for key in given:
            record = await self._lookup(store, hash_key(key))
            if record is not None:
                return record
        return None

    async def _lookup(self, store: StateStore, key_hash: str) -> ClientKeyRecord | None:
        now = self._clock()
        cached = self._cache.get(key_hash)
        if cached is not None and now - cached[1] < CACHE_S:
            return cached[0]
        try:
            record = await store.client_key_by_hash(key_hash)
        except StoreAway:  # the store is away: a key known to be active stays usable
            if cached is None:
                raise
            return cached[0]
        if record is None or record.state != "active":  # only usable keys are cached: an
            self._cache.pop(key_hash, None)  # enable counts at once, a wrong key is re-read
            return record
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key_hash] = (record, now)
        return record


def refuse_if_store_away(scope: Scope) -> None:
    """A store key this worker does not know, presented while the store is away: 503, retry."""
    if (scope.get("state") or {}).get("client_key_away"):
        raise GatewayError(
            ErrorKind.UPSTREAM_UNAVAILABLE,
            "The gateway cannot check this API key now (its state store is away); try again.",
            retryable=True,
            retry_after=1.0,
        )


def _denied(record: ClientKeyRecord, why: str) -> GatewayError:
    return GatewayError(
        ErrorKind.AUTHENTICATION,
        f"The API key {record.hint} ({record.name}) is refused: {why}.",
        code="invalid_api_key",
    )


def refuse_unusable(record: ClientKeyRecord, now: float) -> None:
    """Raise the 401 of a disabled, revoked or expired key."""
    if record.state != "active":
        raise _denied(record, f"it is {record.state}")
    if record.expires_at is not None and record.expires_at <= now:
        raise _denied(record, "it has expired")


def _refusal(record: ClientKeyRecord, verdict: Verdict) -> GatewayError:
    if verdict.kind == "rate":
        return GatewayError(
            ErrorKind.RATE_LIMITED,
            f"Rate limit reached for the API key '{record.name}': {verdict.reason}.",
            retry_after=verdict.retry_after,
            code="rate_limit_exceeded",
        )
    if verdict.kind == "quota":
        return GatewayError(
            ErrorKind.QUOTA_EXHAUSTED,
            f"The API key '{record.name}' is over its budget: {verdict.reason}.",
            retry_after=verdict.retry_after,
            code="insufficient_quota",
        )
    return _denied(record, verdict.reason)


async def admit(scope: Scope, store: StateStore, requested: str, model_id: str) -> None:
    """Let a chat request with a store key start, or raise its refusal (API_KEY: always)."""
    record = client_key_of(scope)
    if record is None:
        return
    if not model_allowed(parse_models(record.models), requested, model_id):
        raise GatewayError(
            ErrorKind.PERMISSION,
            f"The API key '{record.name}' may not use the model `{requested}` "
            f"(allowed: {record.models}).",
            param="model",
        )
    verdict = await store.admit_client_key(record.id, time.time())
    if not verdict.ok:
        raise _refusal(record, verdict)
