"""`ResilientStore`: the gateway's Redis store, serving with what it knows while Redis is away.

A Redis outage must not fail requests. The wrapper passes every call to the `RedisStore`; when
one fails because the server cannot be reached (a connection error or a timeout: a restart, a
network cut), `StoreStatus` turns "away", a probe pings the server every `probe_s`, and until
it answers again every call is served without it:
* reads (accounts, health, tokens, slots in use) answer the last value read or written;
  `changed()` says False (nothing new is known), then True once (reload everything) after;
* token saves are kept in memory (the newest per account, with the version they were based on)
  and their version is given as if saved; when the server is back they are written first,
  compare-and-set on that version: when another replica saved meanwhile, the tokens that
  expire last win (never an older token over a newer one);
* health writes are kept in memory here (the pool has them) and not written; enable/disable
  of an account is written when the server is back;
* a client key's admission lets the request in (fail open, one log line per outage) within
  its requests per minute counted in this process (state/resilient_base.py); a stored response
  is kept in memory (at most `_MAX_RESPONSES`) and written when the server is back;
* slot leases are not taken (`take_slot` raises `StoreAway`: the slot gate counts locally)
  nor renewed; the ones freed meanwhile are freed when the server is back (a live holder renews
  its leases: one left would count for ever); a lock (`try_lock`) raises `StoreAway` (a refresh
  then goes ahead only for an expired token: kiro/login/credentials.py);
* the rest (usage rows: the usage log keeps them and retries; client keys by hash: the door
  keeps the known ones; CLI-style writes) raises `StoreAway`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ki2api.state.base import (
    AccountRecord,
    Health,
    SlotHolder,
    SlotTake,
    StoredTokens,
)
from ki2api.state.resilient_base import AWAY_ERRORS, DueTokens, ResilientBase
from ki2api.state.store_status import StoreAway

__all__ = ["ResilientStore"]

_log = logging.getLogger(__name__)
_MAX_RESPONSES = 1_000


def _expiry(data: Mapping[str, Any]) -> float | None:
    raw = data.get("expiresAt")
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw).timestamp()
    except ValueError:
        return None


class ResilientStore(ResilientBase):
    """A `StateStore` over a `RedisStore` (see the module docstring)."""

    async def _wait_back(self) -> None:
        while not await self.recover():
            await asyncio.sleep(self._probe_s)

    async def recover(self) -> bool:
        """Is the server back? Then write what waited for it and say so (True); the probe
        asks every `probe_s` while it is away."""
        try:
            await self._inner.drop_idle_connections()
            await self._inner.ping()
            written = await self._flush()
        except AWAY_ERRORS:
            return False
        except Exception:  # a bug or a refusal: log it, keep the store usable
            _log.exception("state store: writing what waited failed")
            written = 0
        away = self.status.recovered()
        self._reload = True
        _log.warning(
            "state store %s is back after %.1f s (%d writes that waited done)",
            self._inner.where.masked,
            away,
            written,
        )
        return True

    async def _flush(self) -> int:
        """Write what waited for the server (and what comes meanwhile: the store is still
        "away" for the callers until this ends); raises when it goes away again (what is left
        stays due)."""
        done = 0
        while self._due_tokens or self._due_enabled or self._due_responses or self._due_frees:
            if self._due_frees:
                lease = next(iter(self._due_frees))
                await self._inner.free_slot(*lease)
                self._due_frees.discard(lease)
            elif self._due_tokens:
                account_id, due = next(iter(self._due_tokens.items()))
                await self._write_tokens(account_id, due)
                if self._due_tokens.get(account_id) is due:
                    del self._due_tokens[account_id]
            elif self._due_enabled:
                account_id, change = next(iter(self._due_enabled.items()))
                await self._inner.set_enabled(account_id, *change)
                if self._due_enabled.get(account_id) is change:
                    del self._due_enabled[account_id]
            else:
                response_id, kept = next(iter(self._due_responses.items()))
                if kept[1] > self._clock():
                    await self._inner.put_response(response_id, *kept)
                if self._due_responses.get(response_id) is kept:
                    del self._due_responses[response_id]
            done += 1
        return done

    async def _write_tokens(self, account_id: str, due: DueTokens) -> None:
        """Compare-and-set on the version the tokens followed; when another writer saved
        meanwhile, the tokens that expire last stay."""
        base = due.base
        for _ in range(3):
            version = await self._inner.save_tokens(
                account_id, due.data, expected_version=base, synced_mtime_ns=due.synced_mtime_ns
            )
            stored = await self._inner.load_tokens(account_id)
            if stored is not None:
                self._tokens[account_id] = stored
            if version is not None or stored is None:
                return
            mine, theirs = _expiry(due.data), _expiry(stored.data)
            if mine is None or theirs is None or theirs >= mine:
                _log.warning(
                    "account %s: tokens saved elsewhere during the outage are as new as ours: "
                    "keeping them",
                    account_id,
                )
                return
            base = stored.version

    # accounts --------------------------------------------------------------------------------
    async def list_accounts(self) -> list[AccountRecord]:
        try:
            found: list[AccountRecord] = await self._call("accounts", self._inner.list_accounts)
        except StoreAway:
            if self._accounts is None:
                raise
            return list(self._accounts)
        self._accounts = list(found)
        return found

    async def get_account(self, account_id: str) -> AccountRecord | None:
        try:
            found: AccountRecord | None = await self._call(
                "accounts", self._inner.get_account, account_id
            )
            return found
        except StoreAway:
            if self._accounts is None:
                raise
            return next((r for r in self._accounts if r.id == account_id), None)

    async def upsert_account(self, record: AccountRecord) -> None:
        await self._call("accounts", self._inner.upsert_account, record)

    async def remove_account(self, account_id: str) -> bool:
        return bool(await self._call("accounts", self._inner.remove_account, account_id))

    async def set_enabled(self, account_id: str, enabled: bool, reason: str | None) -> bool:
        try:
            done: bool = await self._call(
                "accounts", self._inner.set_enabled, account_id, enabled, reason
            )
            return done
        except StoreAway:
            self._due_enabled[account_id] = (enabled, reason)
            if self._accounts is not None:
                self._accounts = [
                    dataclasses.replace(r, enabled=enabled, disabled_reason=reason)
                    if r.id == account_id
                    else r
                    for r in self._accounts
                ]
            return True

    # tokens ----------------------------------------------------------------------------------
    async def load_tokens(self, account_id: str) -> StoredTokens | None:
        if account_id in self._due_tokens:
            return self._tokens[account_id]  # ours, newer than the store's until written
        try:
            found: StoredTokens | None = await self._call(
                "tokens", self._inner.load_tokens, account_id
            )
        except StoreAway:
            if account_id not in self._tokens:
                raise
            return self._tokens[account_id]
        if found is not None:
            self._tokens[account_id] = found
        return found

    async def save_tokens(
        self,
        account_id: str,
        data: Mapping[str, Any],
        *,
        expected_version: int | None,
        synced_mtime_ns: int | None = None,
    ) -> int | None:
        if account_id not in self._due_tokens:
            try:
                version: int | None = await self._call(
                    "tokens",
                    self._inner.save_tokens,
                    account_id,
                    data,
                    expected_version=expected_version,
                    synced_mtime_ns=synced_mtime_ns,
                )
            except StoreAway:
                pass
            else:
                if version is not None:
                    self._tokens[account_id] = StoredTokens(
                        dict(data), version, synced_mtime_ns, self._clock()
                    )
                return version
        return self._keep_tokens(account_id, data, expected_version, synced_mtime_ns)

    def _keep_tokens(
        self,
        account_id: str,
        data: Mapping[str, Any],
        expected_version: int | None,
        synced_mtime_ns: int | None,
    ) -> int | None:
        """A save while the server is away: compare-and-set against what we know, kept until
        the server is back (then written on the version the first kept save followed)."""
        known = self._tokens.get(account_id)
        if (known.version if known is not None else None) != expected_version:
            return None
        earlier = self._due_tokens.get(account_id)
        base = earlier.base if earlier is not None else expected_version
        self._due_tokens[account_id] = DueTokens(dict(data), base, synced_mtime_ns)
        version = (expected_version or 0) + 1
        self._tokens[account_id] = StoredTokens(dict(data), version, synced_mtime_ns, self._clock())
        _log.warning("account %s: tokens kept in memory until the state store is back", account_id)
        return version

    # health ----------------------------------------------------------------------------------
    async def health(self) -> dict[str, Health]:
        try:
            found: dict[str, Health] = await self._call("health", self._inner.health)
        except StoreAway:
            if self._health is None:
                raise
            return dict(self._health)
        self._health = dict(found)
        return found

    async def put_health(self, health: Health) -> None:
        if self._health is not None:
            self._health[health.account_id] = health
        try:
            await self._call("health", self._inner.put_health, health)
        except StoreAway:
            self._say_once("health", "state store away: account health is kept in memory only")

    async def changed(self) -> bool:
        try:
            moved: bool = await self._call("changed", self._inner.changed)
        except StoreAway:
            return False
        if self._reload:
            self._reload = False
            return True
        return moved

    # locks -----------------------------------------------------------------------------------
    async def try_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        return await self._call("locks", self._inner.try_lock, name, owner, ttl_s)

    async def unlock(self, name: str, owner: str) -> None:
        with contextlib.suppress(StoreAway):  # its time-to-live frees it
            await self._call("locks", self._inner.unlock, name, owner)

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
        sent = self.status.ok
        try:
            return await self._call(
                "slots",
                self._inner.take_slot,
                account_id,
                lease_id,
                holder,
                cap=cap,
                interval_s=interval_s,
                now=now,
                ttl_s=ttl_s,
            )
        except StoreAway:
            if sent:  # it may have been taken just before the server went: freed when back
                self._due_frees.add((account_id, lease_id))
            raise

    async def free_slot(self, account_id: str, lease_id: str) -> None:
        try:
            await self._call("slots", self._inner.free_slot, account_id, lease_id)
        except StoreAway:
            self._due_frees.add((account_id, lease_id))

    async def renew_slots(self, holder: SlotHolder, expires_at: float) -> None:
        with contextlib.suppress(StoreAway):
            await self._call("slots", self._inner.renew_slots, holder, expires_at)

    async def slots_in_use(self, now: float) -> dict[str, int]:
        with contextlib.suppress(StoreAway):
            self._slots = await self._call("slots", self._inner.slots_in_use, now)
        return dict(self._slots)

    # stored responses ------------------------------------------------------------------------
    async def put_response(self, response_id: str, record: bytes, expires_at: float) -> None:
        try:
            await self._call("responses", self._inner.put_response, response_id, record, expires_at)
        except StoreAway:
            if len(self._due_responses) >= _MAX_RESPONSES:
                self._due_responses.pop(next(iter(self._due_responses)))
                self._say_once("responses", "state store away: older stored responses dropped")
            self._due_responses[response_id] = (bytes(record), expires_at)

    async def get_response(self, response_id: str, now: float) -> bytes | None:
        kept = self._due_responses.get(response_id)
        if kept is not None:
            return kept[0] if kept[1] > now else None
        return await self._call("responses", self._inner.get_response, response_id, now)

    async def delete_response(self, response_id: str) -> bool:
        kept = self._due_responses.pop(response_id, None)
        try:
            done: bool = await self._call("responses", self._inner.delete_response, response_id)
        except StoreAway:
            if kept is None:
                raise
            return kept[1] > self._clock()
        return done or (kept is not None and kept[1] > self._clock())

    async def aclose(self) -> None:
        if self._probe is not None and not self._probe.done():
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self._inner.aclose()
