"""The account pool's pure policy: which account serves, and what a failure does to it.

No I/O and no clock: callers pass `now` (epoch seconds) and the accounts' current state as
`Candidate`s, and apply the returned `Action`s to the store themselves. The failure table follows
KIRO_PROTOCOL.md §6 and issue 5 §3.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.messages import Conversation, ImagePart, TextPart

__all__ = [
    "ACCOUNT_LEVEL",
    "Action",
    "Availability",
    "Candidate",
    "PolicyConfig",
    "availability",
    "choose",
    "conversation_key",
    "failure_action",
    "next_month_start",
    "no_account_error",
    "retry_delay",
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

    def healthy(self, now: float) -> bool:
        return self.enabled and self.cooldown_until <= now


def _share(c: Candidate) -> float:
    """Served requests per unit of weight; a weight of 0 or less makes a last resort."""
    return c.served / c.weight if c.weight > 0 else math.inf


def choose(
    candidates: Sequence[Candidate],
    now: float,
    *,
    sticky: str | None = None,
    exclude: Collection[str] = (),
) -> str | None:
    """The id of the account to use next, or None when no account is healthy.

    A healthy `sticky` account wins (one conversation stays on one account); otherwise the fewest
    in flight, then the higher priority, then the smallest served/weight, then the id.
    """
    healthy = [c for c in candidates if c.healthy(now) and c.id not in exclude]
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
    throttle_base_s: float = 5.0
    throttle_max_s: float = 300.0
    error_base_s: float = 2.0
    error_max_s: float = 60.0
    retry_delay_base_s: float = 0.1
    retry_delay_max_s: float = 1.0


@dataclass(frozen=True, slots=True)
class Action:
    """What to do after a failure on one account.

    `failover`: try another account for this request. `cooldown_until`: None leaves the
    account's cooldown alone. `strike`: count a consecutive failure (the caller resets strikes
    after a success).
    """

    failover: bool
    cooldown_until: float | None
    reason: str | None
    disable: bool = False
    strike: bool = False


def _backoff(base: float, cap: float, strikes: int) -> float:
    return min(base * 2.0 ** min(max(strikes, 0), _MAX_EXPONENT), cap)


_TRANSIENT: dict[ErrorKind, str] = {
    ErrorKind.PERMISSION: "forbidden",
    ErrorKind.UPSTREAM_AUTH: "auth",
    ErrorKind.NO_CREDENTIALS: "credentials",
}
# Failures of one call rather than of the account (5xx, network, timeouts, cut streams): the
# request fails over at once, but the account rests only when it fails twice in a row.
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
}


def failure_action(
    err: GatewayError,
    *,
    strikes: int,
    now: float,
    quota_reset_at: float | None,
    config: PolicyConfig,
) -> Action:
    """The table of KIRO_PROTOCOL.md §6: cool down, disable, or leave the account alone."""
    kind = err.kind
    if kind is ErrorKind.RATE_LIMITED:
        pause = _backoff(config.throttle_base_s, config.throttle_max_s, strikes)
        pause = max(err.retry_after or 0.0, pause)
        return Action(True, now + pause, "throttled", strike=True)
    if kind is ErrorKind.QUOTA_EXHAUSTED:
        until = quota_reset_at
        if until is None or until <= now:
            until = next_month_start(now)
        return Action(True, until, "quota")
    fatal = _FATAL_CODES.get((kind, err.code or ""))
    if fatal is not None:
        return Action(True, None, fatal, disable=True)
    passing = _PASSING.get(kind)
    if passing is not None:
        if strikes == 0:
            return Action(True, None, passing, strike=True)
        pause = _backoff(config.error_base_s, config.error_max_s, strikes - 1)
        return Action(True, now + pause, passing, strike=True)
    reason = _TRANSIENT.get(kind)
    if reason is None:  # the request itself is bad: another account would refuse it too
        return Action(False, None, None)
    pause = _backoff(config.error_base_s, config.error_max_s, strikes)
    return Action(True, now + pause, reason, strike=True)


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
    first = next((m for m in conv.messages if m.role == "user"), None)
    parts = first.parts if first is not None else ()
    texts = [p.text for p in parts if isinstance(p, TextPart)]
    images = [[p.media_type, len(p.data_b64)] for p in parts if isinstance(p, ImagePart)]
    blob = orjson.dumps([conv.model_id, list(conv.system), texts, images])
    return hashlib.sha256(blob).hexdigest()[:24]


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
        throttled = "throttled" in avail.reasons
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
