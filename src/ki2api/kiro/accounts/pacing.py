"""Per-account concurrency cap and pace: the pure arithmetic (docs/accounts.md, "Concurrency
cap, pace and the wait queue").

An account serves at most `cap` requests at once (0: no cap) and starts one at most every
`interval_s` seconds (60 / requests per minute; 0: no pace), so a burst of clients is spread
over time instead of hitting Kiro all at once. The account's own settings (`accounts set ID
--max-inflight N --pace RPM`) win over the pool's defaults. No I/O and no clock here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Limits", "busy_error_message", "limits_of", "pace_interval", "start_wait"]


@dataclass(frozen=True, slots=True)
class Limits:
    cap: int = 0  # requests in flight at most (0: no cap)
    interval_s: float = 0.0  # seconds between two starts at least (0: no pace)
    rpm: float = 0.0  # the pace as given (requests per minute), for display

    @property
    def off(self) -> bool:
        """Neither a cap nor a pace: nothing to count."""
        return self.cap <= 0 and self.interval_s <= 0


def pace_interval(rpm: float) -> float:
    """The least time between two request starts at `rpm` requests per minute (0: no pace)."""
    if not rpm > 0 or not math.isfinite(rpm):
        return 0.0
    return 60.0 / rpm


def limits_of(
    own_cap: int | None, own_rpm: float | None, default_cap: int, default_rpm: float
) -> Limits:
    """An account's limits: its own values where set (not None), else the pool's defaults;
    negative values count as 0 (off)."""
    cap = default_cap if own_cap is None else own_cap
    rpm = default_rpm if own_rpm is None else own_rpm
    rpm = max(0.0, rpm)
    return Limits(cap=max(0, cap), interval_s=pace_interval(rpm), rpm=rpm)


def start_wait(inflight: int, last_start: float | None, limits: Limits, now: float) -> float | None:
    """Whether a request may start on the account now: 0.0 yes; a positive number: the
    seconds until its pace allows the next start; None: it is at its cap (wait for a free slot)."""
    if limits.cap > 0 and inflight >= limits.cap:
        return None
    if limits.interval_s > 0 and last_start is not None:
        return max(0.0, last_start + limits.interval_s - now)
    return 0.0


def busy_error_message(waited_s: float, accounts: int, *, queue_full: bool) -> str:
    """What a client is told when no account has a free slot for it in time."""
    many = "the only Kiro account is" if accounts == 1 else f"all {accounts} Kiro accounts are"
    if queue_full:
        return (
            f"Gateway busy: {many} at their concurrency cap and the wait queue is full "
            "(KI2API_QUEUE_MAX); retry shortly"
        )
    return (
        f"Gateway busy: {many} at their concurrency cap or pace; no slot freed within "
        f"{waited_s:g} s (KI2API_QUEUE_WAIT_S); retry shortly"
    )
