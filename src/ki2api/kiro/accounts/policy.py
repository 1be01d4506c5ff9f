"""The account pool's pure policy: which account serves, and what a failure does to it.

No I/O and no clock: callers pass `now` (epoch seconds) and the accounts' current state as
`Candidate`s, and apply the returned `Action`s to the store themselves. The failure table follows
docs/kiro-protocol.md §6 and docs/accounts.md.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.messages import Conversation
from ki2api.core.proxy import PROXY_FAILED
from ki2api.kiro.classify import (
    CREDIT_WINDOW_CODE,
    LOCATION_BLOCK_CODE,
    SUSPICIOUS_CODE,
    USER_RATE_CODE,
)
from ki2api.kiro.request.conversation_id import start_digest

__all__ = [
    "ACCOUNT_LEVEL",
    "SIGN_CODES",
    "STUCK_THROTTLE",
    "THROTTLE_REASONS",
    "Action",
    "Availability",
    "Blame",
    "Candidate",
    "Failure",
    "PolicyConfig",
    "Strikes",
    "availability",
    "blame",
    "choose",
    "conversation_key",
    "failure_action",
    "next_month_start",
    "no_account_error",
    "retry_delay",
    "same_answer",
]

_MAX_EXPONENT = 30  # 2**30 times any base is far past every cap; keeps floats finite


@dataclass(frozen=True, slots=True)
class Candidate:
    """One account as the policy sees it (never a secret)."""

    id: str
    priority: int = 0
    weight: int = 1
    inflight: int = 0  # requests this process has running on it
    served: int = 0  # requests this process has sent to it so far
    enabled: bool = True
    cooldown_until: float = 0.0
    reason: str | None = None  # why cooling down / disabled
    models: frozenset[str] | None = None  # the Kiro model ids it offers (None: any)
    cap: int = 0  # requests in flight at most (kiro/accounts/pacing.py; 0: no cap)
    not_before: float = 0.0  # its pace allows the next start from this time on

    def healthy(self, now: float) -> bool:
        return self.enabled and self.cooldown_until <= now

    def has_room(self, now: float) -> bool:
        """Below its concurrency cap and due by its pace."""
        return (self.cap <= 0 or self.inflight < self.cap) and self.not_before <= now

    def offers(self, model: str | None) -> bool:
        return model is None or self.models is None or model in self.models


def _share(c: Candidate) -> float:
    """Served requests per unit of weight; a weight of 0 or less makes a last resort."""
    return c.served / c.weight if c.weight > 0 else math.inf


def choose(
    candidates: Sequence[Candidate],
    now: float,
    *,
    sticky: str | None = None,
    exclude: Collection[str] = (),
    model: str | None = None,
) -> str | None:
    """The id of the account to use next, or None when no account is healthy.

    Only accounts that offer `model` (a Kiro id; see `Candidate.models`) are considered, and
    never one at its concurrency cap or not yet due by its pace (`Candidate.has_room`).
    A healthy `sticky` account wins (one conversation stays on one account); otherwise the fewest
    in flight, then the higher priority, then the smallest served/weight, then the id.
    """
    healthy = [
        c
        for c in candidates
        if c.healthy(now) and c.id not in exclude and c.offers(model) and c.has_room(now)
    ]
    if sticky is not None and any(c.id == sticky for c in healthy):
        return sticky
    if not healthy:
        return None
    best = min(healthy, key=lambda c: (c.inflight, -c.priority, _share(c), c.id))
    return best.id


@dataclass(frozen=True, slots=True)
class Availability:
    """Why the pool cannot serve now, and when it may again.

    `retry_after_s`: seconds until the first enabled account is usable (0.0 if one is usable now;
    None if every account is disabled). `all_quota`: every enabled account is out of quota (and
    there is at least one). `all_disabled`: no account is enabled (also true of an empty pool).
    `next_back_at`: the epoch second matching `retry_after_s`. `total`: accounts in the pool.
    `reasons`: sorted, one per account not usable now (disabled or cooling down).
    """

    retry_after_s: float | None
    all_quota: bool
    all_disabled: bool
    next_back_at: float | None = None
    total: int = 0
    reasons: tuple[str, ...] = ()


def _reason(c: Candidate) -> str:
    return c.reason or ("cooling down" if c.enabled else "disabled")


def availability(candidates: Sequence[Candidate], now: float) -> Availability:
    enabled = [c for c in candidates if c.enabled]
    back_at = min((max(c.cooldown_until, now) for c in enabled), default=None)
    out = [c for c in candidates if not c.healthy(now)]
    return Availability(
        retry_after_s=None if back_at is None else back_at - now,
        all_quota=bool(enabled)
        and all(c.reason == "quota" and c.cooldown_until > now for c in enabled),
        all_disabled=not enabled,
        next_back_at=back_at,
        total=len(candidates),
        reasons=tuple(sorted(_reason(c) for c in out)),
    )


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    throttle_base_s: float = 1.0  # the rest after a second 429 in a row (doubles per repeat)
    throttle_max_s: float = 300.0
    # 429s in a row, with no answer between, after which the account is likely out of quota or
    # flagged rather than busy (docs/kiro-protocol.md): it rests `stuck_rest_s` and says so
    stuck_throttles: int = 8
    stuck_rest_s: float = 1800.0
    error_base_s: float = 2.0
    error_max_s: float = 60.0
    strike_memory_s: float = 10.0  # a strike series lapses this long after its last strike/rest
    passing_strikes_to_rest: int = 3  # passing faults in a row before an account rests
    retry_delay_base_s: float = 0.1
    retry_delay_max_s: float = 1.0
    # trouble signs (docs/accounts.md, "Trouble signs"): Kiro's Retry-After wins when longer
    suspicious_rest_s: float = 1800.0  # a 429 about suspicious activity
    credit_window_s: float = 300.0  # "5-minute credit limit exceeded", no Retry-After
    user_rate_rest_s: float = 60.0  # USER_REQUEST_RATE_EXCEEDED, no Retry-After


class Blame(StrEnum):
    """Whose fault a failure is, which decides everything the pool does about it."""

    ACCOUNT = "account"  # throttled, out of quota, suspended, its login: the account rests
    NOBODY = "nobody"  # a passing fault (5xx, a cut or dropped stream, a timeout): fail over
    REQUEST = "request"  # the request itself: any account would fail it; never fail over


@dataclass(frozen=True, slots=True)
class Strikes:
    """An account's current series of failures of one family (see `failure_action`)."""

    count: int = 0
    family: str | None = None  # "throttle", "passing" or "account"
    at: float | None = None  # when the last strike was counted
    rest_until: float = 0.0  # the account's cooldown: a series lapses after it, not during it


@dataclass(frozen=True, slots=True)
class Failure:
    """What the pool knows of one failed attempt besides its error."""

    started_at: float  # when the attempt began: one that began before the last strike is the
    # same event as that strike (failures of requests running in parallel count once)
    others_usable: bool = True  # another account could serve right now
    quota_left: float | None = None  # requests left per a fresh getUsageLimits (None: unknown)
    quota_reset_at: float | None = None


@dataclass(frozen=True, slots=True)
class Action:
    """What to do after a failure on one account.

    `failover`: try another account for this request. `cooldown_until`: None leaves the
    account's cooldown alone. `strikes`: the account's new strike series (None: unchanged).
    """

    failover: bool
    cooldown_until: float | None
    reason: str | None
    disable: bool = False
    strikes: Strikes | None = None
    blame: Blame = Blame.ACCOUNT


def _backoff(base: float, cap: float, strikes: int) -> float:
    return min(base * 2.0 ** min(max(strikes, 0), _MAX_EXPONENT), cap)


# The account's own faults that are not throttling, quota or fatal: they rest it from the first.
_ACCOUNT_REASONS: dict[ErrorKind, str] = {
    ErrorKind.PERMISSION: "forbidden",
    ErrorKind.UPSTREAM_AUTH: "auth",
    ErrorKind.NO_CREDENTIALS: "credentials",
}
# Faults of one call rather than of the account or the request.
_PASSING: dict[ErrorKind, str] = {
    ErrorKind.UPSTREAM_UNAVAILABLE: "unavailable",
    ErrorKind.UPSTREAM_TIMEOUT: "timeout",
    ErrorKind.UPSTREAM_PROTOCOL: "protocol",
    ErrorKind.UPSTREAM_ERROR: "error",
}
# What a failure in the middle of an answer (after the first byte) may teach about the account.
ACCOUNT_LEVEL = frozenset(
    {
        ErrorKind.RATE_LIMITED,
        ErrorKind.QUOTA_EXHAUSTED,
        ErrorKind.PERMISSION,
        ErrorKind.UPSTREAM_AUTH,
    }
)
_FATAL_CODES: dict[tuple[ErrorKind, str], str] = {
    (ErrorKind.PERMISSION, "account_suspended"): "suspended",
    (ErrorKind.UPSTREAM_AUTH, "invalid_grant"): "invalid_grant",
    (ErrorKind.UPSTREAM_AUTH, "api_key_revoked"): "api_key_revoked",  # kiro/login/api_key.py
}
# Upstream failures that any account would repeat for this request: Kiro cuts a tool input that
# is too large (docs/kiro-protocol.md §5.6), whichever account asks.
_REQUEST_CODES = frozenset({"tool_input_truncated"})
# The reason shown for an account whose 429s do not lift after several rests.
STUCK_THROTTLE = "throttled_persistently"
# The rests of the rate limits that name their cause (kiro/classify.py): reason = the code.
SIGN_CODES = frozenset({SUSPICIOUS_CODE, CREDIT_WINDOW_CODE, USER_RATE_CODE})
# Reasons of a rest that a 429 (rate limit) answer describes.
THROTTLE_REASONS = frozenset({"throttled", "limited", STUCK_THROTTLE, *SIGN_CODES})


def _account_reason(err: GatewayError) -> str:
    """The reason shown for an account's own fault (a dead proxy: "proxy")."""
    return "proxy" if err.code == PROXY_FAILED else _ACCOUNT_REASONS[err.kind]


def blame(err: GatewayError) -> Blame:
    """Whose fault an upstream failure is, by its kind alone (the backend knows more: a check
    of the gateway's own, or the same answer from two accounts, makes it the request's)."""
    if err.kind in (ErrorKind.RATE_LIMITED, ErrorKind.QUOTA_EXHAUSTED) or (
        err.kind in _ACCOUNT_REASONS or err.code == PROXY_FAILED  # its proxy is its own
    ):
        return Blame.ACCOUNT
    if err.kind in _PASSING and err.code not in _REQUEST_CODES:
        return Blame.NOBODY
    return Blame.REQUEST


def same_answer(a: GatewayError, b: GatewayError) -> bool:
    """Two passing failures that are the same answer from Kiro (an HTTP error with the same
    status and text): the request is what fails, not the accounts. Cut or dropped streams and
    timeouts never match: they say nothing about the request."""
    return (
        a.upstream_status is not None
        and (a.kind, a.upstream_status, a.message) == (b.kind, b.upstream_status, b.message)
        and blame(a) is Blame.NOBODY
    )


def _series(
    strikes: Strikes, family: str, now: float, started_at: float, cfg: PolicyConfig
) -> tuple[int, bool]:
    """(strikes already in the series of `family`, whether this failure adds one)."""
    if strikes.family != family or strikes.at is None or strikes.count <= 0:
        return 0, True
    if now - max(strikes.at, strikes.rest_until) > cfg.strike_memory_s:
        return 0, True  # lapsed: the account has been fine for a while
    return strikes.count, started_at > strikes.at


def _throttle(
    err: GatewayError, reason: str, strikes: Strikes, now: float, f: Failure, cfg: PolicyConfig
) -> Action:
    """A 429 (or a quota answer while requests are left): the first of a series fails over
    without a rest (one may be a blip: Kiro's capacity answers are not the account's), the
    next rests 1 s, doubling; Kiro's own Retry-After always counts."""
    n, counts = _series(strikes, "throttle", now, f.started_at, cfg)
    pause = _backoff(cfg.throttle_base_s, cfg.throttle_max_s, n - 1) if counts and n else 0.0
    if counts and n + 1 >= cfg.stuck_throttles:  # it does not lift: likely spent or flagged
        pause, reason = max(pause, cfg.stuck_rest_s), STUCK_THROTTLE
    pause = max(err.retry_after or 0.0, pause)
    series = Strikes(n + 1, "throttle", now, now + pause) if counts else None
    return Action(True, now + pause if pause > 0 else None, reason, strikes=series)


def failure_action(
    err: GatewayError,
    *,
    now: float,
    strikes: Strikes,
    failure: Failure,
    config: PolicyConfig,
) -> Action:
    """What a failure does to its account and its request (docs/accounts.md, "What a failure
    does"). Only the account's own faults rest it; a passing fault rests it only after
    `passing_strikes_to_rest` in a row, and never when no other account could serve."""
    who = blame(err)
    if who is Blame.REQUEST:
        return Action(False, None, None, blame=Blame.REQUEST)
    fatal = _FATAL_CODES.get((err.kind, err.code or ""))
    if fatal is not None or err.code == LOCATION_BLOCK_CODE:
        # a location block: the pool rests the account for Claude models only (trouble.py)
        return Action(True, None, fatal or LOCATION_BLOCK_CODE, disable=fatal is not None)
    if err.kind is ErrorKind.RATE_LIMITED:
        if err.code in SIGN_CODES:
            return _sign_rest(err, now, config)
        return _throttle(err, "throttled", strikes, now, failure, config)
    if err.kind is ErrorKind.QUOTA_EXHAUSTED:
        if failure.quota_left is not None and failure.quota_left > 0:
            return _throttle(err, "limited", strikes, now, failure, config)
        until = failure.quota_reset_at
        if until is None or until <= now:
            until = next_month_start(now)
        return Action(True, until, "quota", strikes=Strikes())
    if who is Blame.ACCOUNT:
        n, counts = _series(strikes, "account", now, failure.started_at, config)
        if not counts:
            return Action(True, None, _account_reason(err))
        pause = _backoff(config.error_base_s, config.error_max_s, n)
        return Action(
            True,
            now + pause,
            _account_reason(err),
            strikes=Strikes(n + 1, "account", now, now + pause),
        )
    return _passing(err, strikes, now, failure, config)


def _sign_rest(err: GatewayError, now: float, cfg: PolicyConfig) -> Action:
    """A rate limit that names its cause rests the account from the first one, for as long as
    the cause says: not a strike of the throttle series (so never `throttled_persistently`) and
    not quota. Kiro's Retry-After sets the window's end; it only lengthens the suspicious rest."""
    rest = {
        SUSPICIOUS_CODE: cfg.suspicious_rest_s,
        CREDIT_WINDOW_CODE: cfg.credit_window_s,
        USER_RATE_CODE: cfg.user_rate_rest_s,
    }[err.code or ""]
    if err.retry_after is not None and err.code != SUSPICIOUS_CODE:
        rest = err.retry_after  # Kiro knows when its window ends
    until = now + max(rest, err.retry_after or 0.0, 0.0)
    return Action(True, until, err.code, strikes=Strikes(1, "sign", now, until))


def _passing(
    err: GatewayError, strikes: Strikes, now: float, f: Failure, cfg: PolicyConfig
) -> Action:
    reason = _PASSING[err.kind]
    n, counts = _series(strikes, "passing", now, f.started_at, cfg)
    if not counts:
        return Action(True, None, reason, blame=Blame.NOBODY)
    n += 1
    rests = n >= cfg.passing_strikes_to_rest and f.others_usable
    pause = _backoff(cfg.error_base_s, cfg.error_max_s, n - cfg.passing_strikes_to_rest)
    until = now + pause if rests else None
    return Action(
        True, until, reason, strikes=Strikes(n, "passing", now, until or 0.0), blame=Blame.NOBODY
    )


def retry_delay(attempt: int, config: PolicyConfig) -> float:
    """The pause before attempt `attempt` (0-based): none for the first two, then backoff."""
    if attempt < 2:
        return 0.0
    return _backoff(config.retry_delay_base_s, config.retry_delay_max_s, attempt - 2)


def next_month_start(now: float) -> float:
    """The 1st of the month after `now`, 00:00 UTC, as epoch seconds."""
    t = datetime.fromtimestamp(now, UTC)
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return datetime(year, month, 1, tzinfo=UTC).timestamp()


def conversation_key(conv: Conversation) -> str:
    """A stable key for one conversation: its id when the client sent one, else a short hash.

    The hash covers the model id, the system texts and the first user message's text parts
    (plus its images' media types and sizes, never their bytes), which stay the same on every
    turn of one conversation.
    """
    if conv.conversation_id:
        return conv.conversation_id
    # the sources of the conversationId sent upstream (request/conversation_id.py), and the model
    return start_digest(conv, with_model=True)


def _utc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _tally(reasons: Sequence[str]) -> str:
    return ", ".join(f"{n} {r}" for r, n in sorted(Counter(reasons).items()))


def _all(n: int) -> str:
    if n < 1:
        return "every Kiro account is"
    return "the only Kiro account is" if n == 1 else f"all {n} Kiro accounts are"


def no_account_error(avail: Availability, last: GatewayError | None) -> GatewayError:
    """The error a client gets when no account of the pool can serve its request."""
    wait = avail.retry_after_s
    if avail.all_quota and wait is not None:
        at = avail.next_back_at
        date = "its reset" if at is None else _utc(at)
        return GatewayError(
            ErrorKind.QUOTA_EXHAUSTED,
            f"Every Kiro account in the pool is out of quota until {date}",
            retry_after=wait,
            code=None,  # the dialect default: insufficient_quota
        )
    if wait is not None and wait > 0:
        throttled = any(r in THROTTLE_REASONS for r in avail.reasons)
        return GatewayError(
            ErrorKind.RATE_LIMITED if throttled else ErrorKind.UPSTREAM_UNAVAILABLE,
            f"No Kiro account can serve now: {_all(avail.total)} unavailable "
            f"({_tally(avail.reasons)}); the next is back in {math.ceil(wait)} s",
            retryable=True,
            retry_after=wait,
            code=None,  # the dialect default: rate_limit_exceeded
        )
    if avail.all_disabled:
        why = f" ({_tally(avail.reasons)})" if avail.reasons else ""
        head = f"{_all(avail.total)} disabled{why}" if avail.total else "none is configured"
        return GatewayError(
            ErrorKind.NO_CREDENTIALS,
            f"No usable Kiro account: {head}; run `ki2api accounts list`",
            code="pool_no_account",
        )
    if last is not None:
        return last
    return GatewayError(
        ErrorKind.UPSTREAM_UNAVAILABLE, "No Kiro account could serve the request", retryable=True
    )
