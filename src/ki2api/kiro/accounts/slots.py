"""SlotGate: each account's concurrency cap and pace, kept live, and the wait line in front.

The pool asks the gate for each account's room (`candidate`: `policy.choose` never picks an
account at its cap or not yet due by its pace), takes a slot before an attempt (`take`) and
frees it after (`free`). A single gateway process counts in memory (no I/O on the hot path);
with `serve --workers N` the count must hold for the account as a whole, so each slot is a lease
in the state store (`StateStore.take_slot`, atomic across processes), renewed while held.

A request that finds every account it could use without room waits in the `Waitline` (fair,
bounded, with a deadline: `Turn`), then gets a 429 with retry-after. See docs/accounts.md,
"Concurrency cap, pace and the wait queue".
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.kiro.accounts.pacing import Limits, busy_error_message, limits_of, start_wait
from ki2api.kiro.accounts.policy import Candidate
from ki2api.kiro.accounts.waitline import Ticket, Waitline
from ki2api.state.base import AccountRecord, SlotHolder, SlotTake, StateStore
from ki2api.state.store_status import StoreAway

__all__ = ["Miss", "SlotAccount", "SlotConfig", "SlotGate", "Turn", "queued"]

Offers = Callable[[str], frozenset[str] | None]
_log = logging.getLogger(__name__)
A = TypeVar("A")


class SlotAccount(Protocol):
    """What the gate needs of a pool account."""

    record: AccountRecord
    inflight: int

    @property
    def id(self) -> str: ...
    def candidate(self) -> Candidate: ...


@dataclass(frozen=True, slots=True)
class SlotConfig:
    max_inflight: int = 0  # the pool's default cap per account (0: none)
    pace_rpm: float = 0.0  # the pool's default pace per account (0: none)
    queue_wait_s: float = 30.0  # longest wait in the line
    queue_max: int = 500  # requests waiting at most; beyond it, refused at once
    shared: bool = False  # count in the state store (several worker processes)
    lease_ttl_s: float = 60.0  # a lease not renewed for this long is dropped
    poll_s: float = 0.05  # the head of the line looks for slots freed by other workers


class SlotGate:
    def __init__(
        self,
        config: SlotConfig | None = None,
        store: StateStore | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or SlotConfig()
        self._store = store if self.config.shared else None
        self._clock = clock
        self.line = Waitline(self.config.queue_max)
        self._last_start: dict[str, float] = {}  # this process's last start per account
        self._not_before: dict[str, float] = {}  # shared: the store's pace answers
        self._leases: dict[str, list[str]] = {}
        self._in_use: dict[str, int] = {}  # shared: the ledger as last read (for /health)
        self._holder = SlotHolder(socket.gethostname(), os.getpid())
        self._serial = itertools.count(1)
        self._lease_prefix = f"{self._holder.pid}.{secrets.token_hex(4)}."  # unique per gate
        self._tasks: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None
        self.last_miss = Miss()  # why the pool's last acquire found no account

    def now(self) -> float:
        return self._clock()

    @property
    def shared(self) -> bool:
        return self._store is not None

    def limits(self, account: SlotAccount) -> Limits:
        r = account.record
        return limits_of(r.max_inflight, r.pace_rpm, self.config.max_inflight, self.config.pace_rpm)

    def candidate(self, account: SlotAccount, models: frozenset[str] | None) -> Candidate:
        """The account as `policy.choose` sees it, with its cap and the time its pace allows."""
        limits = self.limits(account)
        base = account.candidate()
        if limits.off:
            return dataclasses.replace(base, models=models)
        not_before = self._not_before.get(account.id, 0.0)
        last = self._last_start.get(account.id)
        if last is not None and limits.interval_s > 0:
            not_before = max(not_before, last + limits.interval_s)
        return dataclasses.replace(base, models=models, cap=limits.cap, not_before=not_before)

    async def take(self, account: SlotAccount) -> bool:
        """Take a slot on `account` for one attempt; False when it has none after all."""
        limits = self.limits(account)
        if limits.off:
            return True
        now = self._clock()
        if self._store is None:
            if start_wait(account.inflight, self._last_start.get(account.id), limits, now) != 0:
                return False
        else:
            lease = f"{self._lease_prefix}{next(self._serial)}"
            try:
                got = await self._store.take_slot(
                    account.id,
                    lease,
                    self._holder,
                    cap=limits.cap,
                    interval_s=limits.interval_s,
                    now=now,
                    ttl_s=self.config.lease_ttl_s,
                )
            except StoreAway:  # the store is away: this process's own count decides
                if start_wait(account.inflight, self._last_start.get(account.id), limits, now) != 0:
                    return False
                got = SlotTake(True)
                lease = ""  # nothing to free in the store
            if not got.taken:
                if got.wait_s is not None:
                    self._not_before[account.id] = now + got.wait_s
                return False
            self._leases.setdefault(account.id, []).append(lease)
            self._keep_renewed()
        if limits.interval_s > 0:
            self._last_start[account.id] = now
        return True

    def free(self, account: SlotAccount) -> None:
        """The attempt on `account` is over: its slot goes to the first request waiting."""
        leases = self._leases.get(account.id)
        if not leases or self._store is None:
            self.line.call()
            return
        lease = leases.pop()
        task = asyncio.get_running_loop().create_task(self._free_lease(account.id, lease))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _free_lease(self, account_id: str, lease: str) -> None:
        assert self._store is not None
        try:
            if lease:
                await self._store.free_slot(account_id, lease)
        except Exception as exc:  # the lease's time-to-live frees it; nobody awaits this task
            _log.warning("account %s: freeing a slot lease failed (%s)", account_id, exc)
        finally:
            self.line.call()

    def _keep_renewed(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        """Extend this process's leases well within their ttl while it holds any."""
        assert self._store is not None
        every = self.config.lease_ttl_s / 3
        while any(self._leases.values()):
            await asyncio.sleep(every)
            try:
                await self._store.renew_slots(self._holder, self._clock() + self.config.lease_ttl_s)
            except Exception as exc:  # try again in a third of the ttl
                _log.warning("renewing the slot leases failed (%s)", exc)

    async def observe(self) -> None:
        """Read the ledger (shared counting) so that `status` shows account-wide figures."""
        if self._store is not None:
            self._in_use = await self._store.slots_in_use(self._clock())

    def status(self, account: SlotAccount) -> dict[str, object]:
        """The account's cap, pace and requests in flight (all workers' when shared)."""
        limits = self.limits(account)
        inflight = self._in_use.get(account.id, 0) if self.shared else account.inflight
        return {"max_inflight": limits.cap, "pace_rpm": limits.rpm, "inflight": inflight}

    def queue_status(self) -> dict[str, object]:
        return {"waiting": len(self.line), "max": self.config.queue_max}

    async def aclose(self) -> None:
        for task in [self._renewer, *self._tasks]:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def turn(self) -> Turn:
        return Turn(self)

    def missed(
        self, candidates: Iterable[Candidate], exclude: Collection[str], model: str | None
    ) -> None:
        """The pool found no account for a request: note whether slots are why (`Miss`)."""
        self.last_miss = _miss(candidates, exclude, model, self._clock())

    def blocked(
        self,
        accounts: Iterable[SlotAccount],
        offers: Offers,
        exclude: Collection[str],
        model: str | None,
    ) -> Miss:
        """`Miss` of the accounts as this gate sees them (without the pool's other rules)."""
        candidates = (self.candidate(a, offers(a.id)) for a in accounts)
        return _miss(candidates, exclude, model, self._clock())


@dataclass(frozen=True, slots=True)
class Miss:
    """Among the healthy accounts not excluded that offer the model: how many there are
    (`usable`), whether one has room now, and the earliest time its pace lets one below its cap
    start (`due_at`; None: every one is at its cap)."""

    usable: int = 0
    room: bool = False
    due_at: float | None = None


def _miss(
    candidates: Iterable[Candidate], exclude: Collection[str], model: str | None, now: float
) -> Miss:
    usable = [c for c in candidates if c.healthy(now) and c.id not in exclude and c.offers(model)]
    paced = [c.not_before for c in usable if c.cap <= 0 or c.inflight < c.cap]
    return Miss(len(usable), any(c.has_room(now) for c in usable), min(paced, default=None))


class Turn:
    """One request's place with respect to the wait line across its tries for an account."""

    def __init__(self, gate: SlotGate) -> None:
        self._gate = gate
        self._ticket: Ticket | None = None
        self._deadline: float | None = None
        self._called = False  # this try was the turn given by a freed slot
        self._timed = False  # the head looks for itself: its timer (pace, poll) or a nudge
        self._miss: Miss | None = None
        self.used = False

    def may_try(self) -> bool:
        """Whether to try for an account now: never ahead of requests already waiting."""
        if self._ticket is None:
            return len(self._gate.line) == 0
        return self._called or self._timed

    async def wait(
        self,
        tried: bool,
        accounts: Iterable[SlotAccount],
        offers: Offers,
        exclude: Collection[str],
        model: str | None,
    ) -> bool:
        """After a try (`tried`), or a turn not taken, that found no account: wait in the line
        when slots are what keeps this request from one (True: try again); False when nothing
        would come of waiting for a slot (no usable account: resting, excluded). Raises the 429
        at the deadline, or at once when the line is full."""
        gate, line = self._gate, self._gate.line
        if tried:  # the pool said why it found none (its own rules included)
            self._miss = gate.last_miss
        elif self._miss is None:  # a newcomer behind the line
            self._miss = gate.blocked(accounts, offers, exclude, model)
        miss = self._miss
        if self._ticket is not None and self._called:
            line.pass_on(self._ticket)  # the freed slot was not one this request could use
        if miss.usable == 0:
            return False  # no account to wait for a slot on (the caller sees why)
        ticket = self._ticket or self._join(miss)
        assert self._deadline is not None
        left = self._deadline - time.monotonic()
        if left <= 0:
            hint = _pace_hint(gate, miss.due_at)
            raise _busy(gate.config.queue_wait_s, miss.usable, hint, queue_full=False)
        self._called = await line.wait(ticket, self._timeout(ticket, left, miss.due_at))
        self._timed = not self._called and line.first(ticket) and time.monotonic() < self._deadline
        return True

    def _join(self, miss: Miss) -> Ticket:
        line = self._gate.line
        if line.full():
            raise _busy(0.0, miss.usable, 1.0, queue_full=True)
        ticket = self._ticket = line.join()
        self._deadline = time.monotonic() + self._gate.config.queue_wait_s
        if miss.room and len(line) > 1:
            line.call()  # room for someone: the line tries in its order
        return ticket

    def _timeout(self, ticket: Ticket, left: float, due_at: float | None) -> float:
        """The head also wakes when a paced account is due, and polls for slots other
        workers free (they cannot call it)."""
        gate = self._gate
        if not gate.line.first(ticket):
            return left
        if due_at is not None:
            left = min(left, max(0.0, due_at - gate.now()))
        if gate.shared:
            left = min(left, gate.config.poll_s)
        return left

    def close(self) -> None:
        if self._ticket is not None:
            self._gate.line.leave(self._ticket, used=self.used)
            self._ticket = None


async def queued(
    gate: SlotGate,
    acquire: Callable[[], Awaitable[A | None]],
    accounts: Callable[[], Iterable[SlotAccount]],
    offers: Offers,
) -> A | None:
    """`acquire()` in turn: waiting in the line while every account is at its cap (a request
    outside `FailoverRun`, e.g. a web search). None when no account could serve at all."""
    turn = gate.turn()
    try:
        while True:
            tried = turn.may_try()
            account = await acquire() if tried else None
            if account is not None:
                turn.used = True
                return account
            if not await turn.wait(tried, accounts(), offers, (), None):
                return None
    finally:
        turn.close()


def _pace_hint(gate: SlotGate, due_at: float | None) -> float:
    """The retry-after of a request that waited in vain: when a paced account is due, else 1 s."""
    if due_at is None:
        return 1.0
    return max(1.0, due_at - gate.now())


def _busy(waited: float, accounts: int, retry_after: float, *, queue_full: bool) -> GatewayError:
    return GatewayError(
        ErrorKind.RATE_LIMITED,
        busy_error_message(waited, accounts, queue_full=queue_full),
        retryable=True,
        retry_after=retry_after if math.isfinite(retry_after) else 1.0,
        code=None,  # the dialect default: rate_limit_exceeded / rate_limit_error
    )
