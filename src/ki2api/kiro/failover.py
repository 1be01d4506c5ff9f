"""One request's attempts across the account pool: which account next, and whose fault a
failure was (see docs/accounts.md, "What a failure does").

`FailoverRun` is the bookkeeping `KiroBackend.stream()` keeps between attempts: the accounts
tried, the ones barred for their own fault, the waiting allowance for a resting account, and
the passing failures whose strikes are settled when the request is over. The wire work (posting,
decoding, the first-content hold) stays in `kiro/backend.py`; the pure rules in `pool_policy`.
"""

from __future__ import annotations

import asyncio
import random

from ki2api.core.errors import GatewayError
from ki2api.kiro.accounts.policy import Blame, blame, retry_delay, same_answer
from ki2api.kiro.accounts.pool import AccountPool, PoolAccount
from ki2api.kiro.accounts.trouble import location_error

__all__ = ["FailoverRun"]

_WAIT_MARGIN_S = 0.05  # waiters wake spread over this much after the rest ends


class FailoverRun:
    """The attempts of one request across the pool.

    Accounts are tried each once; then those that failed for nobody's fault may be tried
    once more (a pool of one still gets a second try after a 5xx). A passing failure strikes its
    account only when the request is over (`settle`): if the same answer came twice, the
    request was at fault and no account is struck."""

    def __init__(self, pool: AccountPool, max_wait_s: float, model: str | None = None) -> None:
        self._pool = pool
        self._model = model  # only accounts whose catalogue offers it
        self._wait_left = max_wait_s
        self.tried: set[str] = set()
        self.barred: set[str] = set()  # failed for their own fault: not again in this request
        self.done: set[str] = set()  # barred, or tried twice already
        self.last: GatewayError | None = None
        self._passing: list[tuple[PoolAccount, GatewayError, float]] = []
        self._pause_left = 0.0  # before an account's second try in this request

    async def next_account(self, key: str | None, attempt: int) -> PoolAccount | None:
        """The account for this attempt (counted in flight), or None. When every account
        rests and one is back within the request's waiting allowance (KI2API_POOL_WAIT_S), the
        request waits for it rather than failing: a short rest never reaches the client."""
        policy = self._pool.policy
        delay = retry_delay(attempt, policy)
        if delay > 0:
            await asyncio.sleep(delay)
        self._pause_left = max(0.0, policy.retry_delay_base_s - delay)
        pool = self._pool
        turn = pool.slots.turn()  # every account at its cap: wait in line (kiro/accounts/slots.py)
        try:
            while True:
                tried = turn.may_try()
                account = await self._acquire(key) if tried else None
                if account is not None:
                    turn.used = True
                    if account.id in self.tried:
                        self.done.add(account.id)  # its second try in this request: the last
                    self.tried.add(account.id)
                    return account
                if await turn.wait(tried, pool.accounts, pool.offers, self.done, self._model):
                    continue
                wait = pool.back_in(self.done)
                if wait is None or wait > self._wait_left:
                    self._note_blocked()
                    return None
                self._wait_left -= wait
                await asyncio.sleep(wait + _WAIT_MARGIN_S * random.random())
        finally:
            turn.close()

    async def _acquire(self, key: str | None) -> PoolAccount | None:
        account = await self._pool.acquire(key, self.tried, model=self._model)
        if account is None and self.tried - self.done:
            # every account was tried: one that failed for nobody's fault may be tried again
            if self._pause_left > 0:
                await asyncio.sleep(self._pause_left)
                self._pause_left = 0.0
            account = await self._pool.acquire(key, self.done, model=self._model)
        return account

    def _note_blocked(self) -> None:
        """No account left: when some rest from Claude models (a likely location block), the
        client is told so rather than a bare "no account could serve"."""
        pool = self._pool
        if self.last is None and pool.trouble.blocked(self._model, pool.accounts, pool.now()):
            self.last = location_error(self._model)

    async def failed(
        self, account: PoolAccount, err: GatewayError, started_at: float, *, ours: bool
    ) -> bool:
        """Record a failed attempt; True when another attempt may follow. Kiro's
        INVALID_MODEL_ID for a Claude model the account should have becomes a location block
        (kiro/accounts/trouble.py): the account's fault, so the request fails over."""
        offered = self._pool.offers(account.id)
        err = self._pool.trouble.reframe(account.id, err, self._model, offered, self._pool.now())
        self.last = err
        if ours:  # a check of the gateway's own (response_format): the request's fault
            return False
        if blame(err) is Blame.NOBODY:
            if any(same_answer(err, seen) for _, seen, _ in self._passing):
                self._passing = [p for p in self._passing if not same_answer(err, p[1])]
                return False
            self._passing.append((account, err, started_at))
            return True
        action = await self._pool.failed(account, err, started_at=started_at)
        if action.failover:
            self.barred.add(account.id)
            self.done.add(account.id)
        return action.failover

    async def settle(self) -> None:
        passing, self._passing = self._passing, []
        for account, err, started_at in passing:
            await self._pool.failed(account, err, started_at=started_at)
