"""AccountPool: the Kiro accounts a gateway process serves from, and what it knows of them.

Selection and the failure table are pure (`pool_policy`); this class keeps the live state
(requests in flight, sticky conversations), mirrors health from the state store, and writes back
what a failure taught it. Health written by another worker shows up here on the next request
(`StateStore.changed()` is checked once per acquire), so a cooldown seen by one worker applies
to all. Accounts added or removed with `ki2api accounts` while the gateway runs are picked up
the same way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.proxy import ProxyURL
from ki2api.kiro.accounts.policy import (
    STUCK_THROTTLE,
    Action,
    Blame,
    Candidate,
    Failure,
    PolicyConfig,
    Strikes,
    availability,
    choose,
    failure_action,
    no_account_error,
)
from ki2api.kiro.accounts.quota import Quota
from ki2api.kiro.accounts.slots import SlotGate
from ki2api.kiro.accounts.trouble import Trouble, trouble_view
from ki2api.kiro.login.credentials import KiroCredentials
from ki2api.kiro.login.token_file import file_mtime_ns
from ki2api.state.base import FILE_SOURCES, AccountRecord, Health, StateStore

__all__ = ["AccountPool", "PoolAccount", "QuotaLookup"]

_log = logging.getLogger(__name__)
_MAX_ERROR_CHARS = 300
_RELOGIN_CHECK_S = 2.0
_STORE_CHECK_S = 0.05
_RELOGIN_REASONS = frozenset({"invalid_grant"})
_LIFTED_BY_SUCCESS = frozenset({"quota", "limited"})


@dataclass(eq=False)
class PoolAccount:
    record: AccountRecord
    credentials: KiroCredentials
    health: Health
    inflight: int = 0
    served: int = 0
    disabled_mtime: int | None = None  # its token file's version when it was disabled
    quota_lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)

    @property
    def id(self) -> str:
        return self.record.id

    def candidate(self) -> Candidate:
        return Candidate(
            id=self.record.id,
            priority=self.record.priority,
            weight=self.record.weight,
            inflight=self.inflight,
            served=self.served,
            enabled=self.record.enabled,
            cooldown_until=self.health.cooldown_until,
            reason=self.record.disabled_reason if not self.record.enabled else self.health.reason,
        )


# Ask Kiro for an account's quota (None when it cannot tell); see pool_upkeep.quota_lookup.
QuotaLookup = Callable[[PoolAccount], Awaitable[Quota | None]]


class AccountPool:
    def __init__(
        self,
        store: StateStore,
        credentials_for: Callable[[AccountRecord], KiroCredentials],
        *,
        policy: PolicyConfig | None = None,
        clock: Callable[[], float] = time.time,
        sticky_limit: int = 10_000,
        quota_lookup: QuotaLookup | None = None,
    ) -> None:
        self._store = store
        self._credentials_for = credentials_for
        self.policy = policy or PolicyConfig()
        self._clock = clock
        self._accounts: dict[str, PoolAccount] = {}
        self._sticky: OrderedDict[str, str] = OrderedDict()
        self._sticky_limit = sticky_limit
        self._relogin_checked = 0.0
        self._store_checked = -_STORE_CHECK_S
        self._quota_lookup = quota_lookup
        # the Kiro model ids an account offers (kiro/accounts/catalogue.py sets it); None: any
        self.offers: Callable[[str], frozenset[str] | None] = lambda _account_id: None
        self.slots = SlotGate()  # caps, pace and the wait line (services sets the configured one)
        self.trouble = Trouble()  # trouble signs: request shapes, location blocks, warnings
        # each account's outbound proxy, from the records of every load (kiro/accounts/proxies.py)
        self.proxy_of: Callable[[str], ProxyURL | None] = lambda _account_id: None
        self.on_load: Callable[[list[AccountRecord]], None] = lambda _records: None

    def __len__(self) -> int:
        return len(self._accounts)

    @property
    def accounts(self) -> list[PoolAccount]:
        return list(self._accounts.values())

    def get(self, account_id: str) -> PoolAccount | None:
        return self._accounts.get(account_id)

    async def load(self) -> None:
        """(Re)read accounts and health from the store; keeps live counters and credentials."""
        records = await self._store.list_accounts()
        self.on_load(records)
        health = await self._store.health()
        fresh: dict[str, PoolAccount] = {}
        for record in records:
            known = self._accounts.get(record.id)
            state = health.get(record.id) or Health(record.id)
            if known is not None and _same_login(known.record, record):
                known.record, known.health = record, state
                fresh[record.id] = known
            else:
                fresh[record.id] = PoolAccount(record, self._credentials_for(record), state)
        self._accounts = fresh

    async def sync(self) -> None:
        """Take in what other processes wrote, now."""
        await self._sync(force=True)

    async def _sync(self, *, force: bool = False) -> None:
        """Take in what other processes wrote: asked of the store at most every
        `_STORE_CHECK_S` (a read costs tens of µs once the file is busy), so a cooldown one
        worker writes reaches the others within that time."""
        tick = time.monotonic()
        if force or tick - self._store_checked >= _STORE_CHECK_S:
            self._store_checked = tick
            if await self._store.changed():
                await self.load()
        now = self._clock()
        if now - self._relogin_checked >= _RELOGIN_CHECK_S:
            self._relogin_checked = now
            await self._enable_relogged()

    async def _enable_relogged(self) -> None:
        """A token-file account disabled for a revoked login comes back when its file changes
        (the user signed in again with the Kiro IDE)."""
        for account in self._accounts.values():
            record = account.record
            if record.enabled or record.disabled_reason not in _RELOGIN_REASONS:
                continue
            if record.source not in FILE_SOURCES or not record.path:
                continue
            mtime = file_mtime_ns(Path(record.path))
            if account.disabled_mtime is None:
                account.disabled_mtime = mtime
            elif mtime != account.disabled_mtime:
                await self.enable(account.id, why="its token file changed (a new login)")

    async def enable(self, account_id: str, *, why: str) -> None:
        account = self._accounts.get(account_id)
        await self._store.set_enabled(account_id, True, None)
        if account is not None:
            account.record = dataclasses.replace(account.record, enabled=True, disabled_reason=None)
            account.credentials = self._credentials_for(account.record)  # no stale failure state
            account.disabled_mtime = None
            account.health = dataclasses.replace(
                account.health, cooldown_until=0.0, reason=None, strikes=0, strike_reason=None
            )
            await self._store.put_health(account.health)
        _log.info("account %s enabled again: %s", account_id, why)

    async def acquire(
        self, key: str | None, exclude: Collection[str], *, model: str | None = None
    ) -> PoolAccount | None:
        """An account for the next attempt (counted in flight until `release`), or None.
        With `model` (a Kiro id), only an account whose catalogue offers it."""
        await self._sync()
        sticky = self._sticky.get(key) if key is not None else None
        exclude = {*exclude, *self.trouble.blocked(model, self._accounts.values(), self._clock())}
        skip = set(exclude)
        while True:  # an account with room (kiro/accounts/slots.py), and a slot taken on it
            candidates = [
                self.slots.candidate(a, self.offers(a.id)) for a in self._accounts.values()
            ]
            chosen = choose(candidates, self._clock(), sticky=sticky, exclude=skip, model=model)
            if chosen is None:
                self.slots.missed(candidates, exclude, model)  # why, for the wait line
                return None
            account = self._accounts[chosen]
            if await self.slots.take(account):
                break
            skip.add(chosen)  # another worker took its last slot first
        account.inflight += 1
        account.served += 1
        return account

    def note_request(self, account_id: str, model: str | None, size: int) -> None:
        """Keep the shape of a request sent on the account (trouble.py; never its content)."""
        account = self._accounts.get(account_id)
        inflight = account.inflight if account is not None else 0
        self.trouble.note_request(
            account_id, model=model, size=size, inflight=inflight, now=self._clock()
        )

    def release(self, account: PoolAccount) -> None:
        account.inflight -= 1
        self.slots.free(account)

    def stick(self, key: str | None, account: PoolAccount) -> None:
        """Keep this conversation on `account` while it stays healthy."""
        if key is None:
            return
        self._sticky[key] = account.id
        self._sticky.move_to_end(key)
        while len(self._sticky) > self._sticky_limit:
            self._sticky.popitem(last=False)

    def now(self) -> float:
        """The pool's clock (epoch seconds): attempts note when they began with it."""
        return self._clock()

    def others_usable(self, account: PoolAccount) -> bool:
        """Could another account serve right now?"""
        now = self._clock()
        return any(a is not account and a.candidate().healthy(now) for a in self._accounts.values())

    def back_in(self, exclude: Collection[str]) -> float | None:
        """Seconds until the first enabled account not in `exclude` is back from a short rest
        (not a quota bench); None when there is none to wait for."""
        now = self._clock()
        backs = [
            a.health.cooldown_until - now
            for a in self._accounts.values()
            if a.record.enabled
            and a.id not in exclude
            and a.health.cooldown_until > now
            and a.health.reason != "quota"
        ]
        return min(backs, default=None)

    async def failed(
        self,
        account: PoolAccount,
        err: GatewayError,
        *,
        started_at: float | None = None,
        request_fault: bool = False,
    ) -> Action:
        """Apply what `err` says about `account` (cooldown, disable) and return the action.

        `started_at`: when the failed attempt began (failures of attempts that began before the
        account's last strike are that strike again). `request_fault`: the backend found the
        request itself at fault (a check of the gateway's own, the same answer twice): nothing
        happens to the account."""
        now = self._clock()
        if request_fault:
            return Action(False, None, None, blame=Blame.REQUEST)
        started = now if started_at is None else started_at
        quota_left: float | None = None
        if err.kind is ErrorKind.QUOTA_EXHAUSTED:
            quota_left = await self._quota_left(account, started)
            now = self._clock()
        health = account.health
        action = failure_action(
            err,
            now=now,
            strikes=_strikes(health),
            failure=Failure(
                started_at=started,
                others_usable=self.others_usable(account),
                quota_left=quota_left,
                quota_reset_at=health.quota_reset_at,
            ),
            config=self.policy,
        )
        await self.trouble.failed(self._store, account, err, action, now)  # warnings, records
        if action.disable:
            await self._disable(account, action.reason or err.kind.value, err)
        if action.cooldown_until is None and action.strikes is None:
            return action  # the request's fault, or a parallel failure already counted
        self._apply(account, action, err, now)
        await self._store.put_health(account.health)
        if action.reason == STUCK_THROTTLE and action.strikes is not None:
            _log.warning(
                "account %s: %d 429s in a row did not lift: likely out of quota or flagged "
                "(check it in Kiro); resting %.0f s",
                account.id,
                action.strikes.count,
                (action.cooldown_until or now) - now,
            )
        elif action.cooldown_until is not None and action.cooldown_until > now:
            _log.info(
                "account %s: %s, resting %.0f s",
                account.id,
                action.reason,
                action.cooldown_until - now,
            )
        return action

    @staticmethod
    def _apply(account: PoolAccount, action: Action, err: GatewayError, now: float) -> None:
        """The account's health after `action`: the later of its rests wins, and the reason
        shown is always the reason of the rest in force."""
        health = account.health
        until = health.cooldown_until
        reason = health.reason if until > now else None
        if action.cooldown_until is not None and action.cooldown_until >= until:
            until, reason = action.cooldown_until, action.reason
        series = action.strikes or _strikes(health)
        account.health = dataclasses.replace(
            health,
            cooldown_until=until,
            reason=reason,
            strikes=series.count,
            strike_reason=series.family,
            struck_at=series.at,
            last_error=err.message[:_MAX_ERROR_CHARS],
        )

    async def _quota_left(self, account: PoolAccount, since: float) -> float | None:
        """Requests left on `account` per a getUsageLimits answer got after `since` (when the
        failed attempt began), asked one question at a time per account; None when unknown.
        A quota answer while requests are left is a passing limit, not a month on the bench."""

        def fresh() -> bool:
            checked = account.health.quota_checked_at
            return checked is not None and checked >= since

        if not fresh() and self._quota_lookup is not None:
            async with account.quota_lock:
                if not fresh():
                    await self._learn_quota(account)
        return account.health.quota_remaining if fresh() else None

    async def _learn_quota(self, account: PoolAccount) -> None:
        assert self._quota_lookup is not None
        now = self._clock()
        quota = await self._quota_lookup(account)
        if quota is None:
            return
        account.health = dataclasses.replace(
            account.health,
            quota_remaining=quota.remaining,
            quota_limit=quota.limit,
            quota_reset_at=quota.reset_at,
            quota_checked_at=now,
        )

    async def _disable(self, account: PoolAccount, reason: str, err: GatewayError) -> None:
        account.record = dataclasses.replace(account.record, enabled=False, disabled_reason=reason)
        if account.record.path:
            account.disabled_mtime = file_mtime_ns(Path(account.record.path))
        await self._store.set_enabled(account.id, False, reason)
        _log.warning(
            "account %s disabled (%s): %s. `ki2api accounts enable %s` after fixing it.",
            account.id,
            reason,
            err.message[:_MAX_ERROR_CHARS],
            account.id,
        )

    async def succeeded(self, account: PoolAccount, *, started_at: float | None = None) -> None:
        """An answer came: the strike series ends; a quota bench lifts (the account served, so
        it has requests left); another rest lifts when this attempt began after the strike that
        caused it (newer news). Written only when something changed."""
        now = self._clock()
        h = account.health
        resting = h.cooldown_until > now
        newer = started_at is None or h.struck_at is None or started_at > h.struck_at
        lift = resting and (h.reason in _LIFTED_BY_SUCCESS or newer)
        if resting and not lift:
            if h.strikes == 0:
                return
            account.health = dataclasses.replace(h, strikes=0, strike_reason=None, struck_at=None)
        elif h.strikes or h.reason is not None or h.last_error is not None or lift:
            account.health = dataclasses.replace(
                h,
                cooldown_until=0.0 if lift else h.cooldown_until,
                reason=None,
                strikes=0,
                strike_reason=None,
                struck_at=None,
                last_error=None,
                last_ok_at=now,
            )
            if lift:
                _log.info("account %s answered again: its %s rest is lifted", account.id, h.reason)
        else:
            return
        await self._store.put_health(account.health)

    async def note_quota(self, account_id: str, health: Health) -> None:
        """Quota figures fetched from getUsageLimits (keeps cooldown fields as they are, except
        that a quota bench lifts when the figures show requests left)."""
        account = self._accounts.get(account_id)
        base = account.health if account is not None else health
        merged = dataclasses.replace(
            base,
            quota_remaining=health.quota_remaining,
            quota_limit=health.quota_limit,
            quota_reset_at=health.quota_reset_at,
            quota_checked_at=health.quota_checked_at,
        )
        left = health.quota_remaining
        if merged.reason == "quota" and left is not None and left > 0:
            merged = dataclasses.replace(merged, cooldown_until=0.0, reason=None)
            _log.info("account %s has %g requests left: back from its quota rest", account_id, left)
        if account is not None:
            account.health = merged
        await self._store.put_health(merged)

    def unavailable(self, last: GatewayError | None) -> GatewayError:
        """The error for a client no account can serve now (429/503 with retry-after).

        When this very request saw the failure that disabled the last usable account (a revoked
        login, a suspension), the client gets that failure itself: it says what to fix."""
        candidates = [a.candidate() for a in self._accounts.values()]
        avail = availability(candidates, self._clock())
        if avail.all_disabled and last is not None and len(candidates) > 0:
            return last
        return no_account_error(avail, last)

    def status(self) -> list[dict[str, object]]:
        """Per-account view for /health: never a token."""
        now = self._clock()
        out: list[dict[str, object]] = []
        for account in self._accounts.values():
            h = account.health
            item: dict[str, object] = {
                "id": account.id,
                "source": account.record.source,
                "enabled": account.record.enabled,
                "disabled_reason": account.record.disabled_reason,
                "cooldown_s": round(max(0.0, h.cooldown_until - now), 1),
                "reason": h.reason,
                "inflight": account.inflight,
                **self.slots.status(account),
                "quota_remaining": h.quota_remaining,
                "login": account.credentials.status(),
                **trouble_view(h, now),  # warning, warnings, suspension
            }
            out.append(item)
        return out


def _strikes(h: Health) -> Strikes:
    return Strikes(h.strikes, h.strike_reason, h.struck_at, h.cooldown_until)


def _same_login(old: AccountRecord, new: AccountRecord) -> bool:
    """Can the live credentials of `old` keep serving `new` (same source and file)?"""
    return (old.source, old.path, old.auth_method) == (new.source, new.path, new.auth_method)
