"""Client keys' pure rules: the key's format and hash, names, model patterns, the counting
windows of the limits, and the admission verdict. No I/O: every store implements its limits
with these (state/client_key_sql.py for SQLite), and the CLI and the server use them too.

Windows are fixed and aligned to UTC: `minute` (rpm, tpm), `day` (daily tokens) and `month`
(monthly requests, the calendar month). A window is numbered (`window_of`) and ends at
`window_end`; a counter of another window than the current one counts as zero.
"""

from __future__ import annotations

import calendar
import fnmatch
import hashlib
import re
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ki2api.state.base import UsageRow

__all__ = [
    "KEY_PREFIX",
    "PERIODS",
    "OK",
    "Counter",
    "Limits",
    "Verdict",
    "check_name",
    "decide",
    "hash_key",
    "key_hint",
    "looks_like_key",
    "token_charges",
    "model_allowed",
    "new_key",
    "parse_expiry",
    "parse_models",
    "window_end",
    "window_of",
]

KEY_PREFIX = "sk-ki2api-"
PERIODS = ("minute", "day", "month")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
# what the usage log writes for API_KEY and unknown keys (server/auth.py): no key name may be one
_RESERVED = re.compile(r"(?i)key-\d+|none|invalid.*")


def new_key() -> str:
    """A new client key: the prefix and 32 random bytes, URL-safe base64 (43 characters)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def looks_like_key(given: bytes) -> bool:
    return given.startswith(KEY_PREFIX.encode())


def hash_key(key: str | bytes) -> str:
    """What the store keeps of a key: SHA-256, hex (the key has 256 random bits: no salt or
    slow hash needed, and the lookup is one index probe)."""
    raw = key.encode("latin-1", "replace") if isinstance(key, str) else key
    return hashlib.sha256(raw).hexdigest()


def key_hint(key: str) -> str:
    """How a key is shown after its creation: the prefix and its last 4 characters."""
    return f"{KEY_PREFIX}…{key[-4:]}"


def parse_expiry(raw: str) -> float:
    """`2027-01-31` (00:00 UTC that day) or an ISO 8601 time (UTC unless it names a zone), as
    epoch seconds; ValueError with a clear message otherwise."""
    try:
        when = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ValueError(f"{raw!r} is not a date (YYYY-MM-DD) or an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def check_name(name: str) -> str | None:
    """Why `name` cannot name a key, or None when it can."""
    if not _NAME.fullmatch(name):
        return "a key name is 1-64 letters, digits, '_', '.', '@' or '-', starting alnum"
    if _RESERVED.fullmatch(name):
        return f"'{name}' is reserved (the usage log uses it for API_KEY or unknown keys)"
    return None


def parse_models(text: str | None) -> tuple[str, ...]:
    """`claude-sonnet-*,claude-haiku-*` -> the patterns (empty: every model)."""
    if not text:
        return ()
    return tuple(p.strip().lower() for p in text.split(",") if p.strip())


def model_allowed(patterns: tuple[str, ...], *names: str) -> bool:
    """True without patterns, or when any of `names` (the model as requested, its catalogue id)
    matches a pattern (fnmatch: `*`, `?`, `[...]`; case-insensitive)."""
    if not patterns:
        return True
    return any(fnmatch.fnmatchcase(n.lower(), p) for n in names if n for p in patterns)


def token_charges(rows: Iterable[UsageRow]) -> Iterator[tuple[str, str, int, int]]:
    """(key name, period, window, tokens) for each row naming a store key: its tokens count in
    the minute and day windows of when it finished. Rows of API_KEY (`key-N`), of wrong keys
    (`invalid:…`) and without tokens charge nothing. Every store charges by this rule."""
    for row in rows:
        tokens = (row.input_tokens or 0) + (row.output_tokens or 0)
        if tokens <= 0 or row.client_key.startswith(("key-", "invalid:")):
            continue
        done = row.at + row.latency_ms / 1000
        for period in ("minute", "day"):
            yield row.client_key, period, window_of(period, done), tokens


def window_of(period: str, now: float) -> int:
    """The number of the `period` window holding `now` (epoch seconds, UTC)."""
    if period == "minute":
        return int(now // 60)
    if period == "day":
        return int(now // 86400)
    if period == "month":
        t = time.gmtime(now)
        return t.tm_year * 12 + t.tm_mon - 1
    raise ValueError(f"unknown period {period!r}")


def window_end(period: str, window: int) -> float:
    """When window `window` of `period` ends (the next one starts)."""
    if period == "minute":
        return float((window + 1) * 60)
    if period == "day":
        return float((window + 1) * 86400)
    if period == "month":
        year, month = divmod(window + 1, 12)
        return float(calendar.timegm((year, month + 1, 1, 0, 0, 0)))
    raise ValueError(f"unknown period {period!r}")


@dataclass(frozen=True, slots=True)
class Counter:
    """One period's counts of one key, as stored: the window they belong to."""

    window: int
    requests: int = 0
    tokens: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    """`ok`, or why not: `kind` "rate" (429, retry later), "quota" (429 insufficient_quota)
    or "denied" (401: revoked, disabled, expired, gone); `retry_after` in seconds."""

    ok: bool
    kind: str | None = None
    reason: str = ""
    retry_after: float | None = None


OK = Verdict(True)


@dataclass(frozen=True, slots=True)
class Limits:
    """A key's limits (None: no limit)."""

    rpm: int | None = None
    tpm: int | None = None
    daily_tokens: int | None = None
    monthly_requests: int | None = None


def _current(counters: Mapping[str, Counter], period: str, now: float) -> Counter:
    window = window_of(period, now)
    found = counters.get(period)
    return found if found is not None and found.window == window else Counter(window)


def decide(limits: Limits, counters: Mapping[str, Counter], now: float) -> Verdict:
    """May one more request start now? Rate limits first (they pass soonest), then budgets."""
    minute = _current(counters, "minute", now)
    wait = max(0.0, window_end("minute", minute.window) - now)
    if limits.rpm is not None and minute.requests >= limits.rpm:
        return Verdict(False, "rate", f"over its limit of {limits.rpm} requests per minute", wait)
    if limits.tpm is not None and minute.tokens >= limits.tpm:
        return Verdict(False, "rate", f"over its limit of {limits.tpm} tokens per minute", wait)
    day = _current(counters, "day", now)
    if limits.daily_tokens is not None and day.tokens >= limits.daily_tokens:
        wait = window_end("day", day.window) - now
        reason = f"its daily budget of {limits.daily_tokens} tokens is spent"
        return Verdict(False, "quota", reason, wait)
    month = _current(counters, "month", now)
    if limits.monthly_requests is not None and month.requests >= limits.monthly_requests:
        wait = window_end("month", month.window) - now
        reason = f"its monthly budget of {limits.monthly_requests} requests is spent"
        return Verdict(False, "quota", reason, wait)
    return OK
