"""Per-account behaviour: the faults an account shows, changeable at run time (docs/emulator.md).

`Behaviour.updated(changes)` validates a `{"key": value}` object from `POST` / `PATCH
/_emulator/accounts`; an unknown key or a bad value raises ValueError naming it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["FAULT_NAMES", "Behaviour", "Stall"]

# Names accepted in `faults` (the random fault injection) and written to the request log.
FAULT_NAMES = (
    "throttled",
    "quota_exhausted",
    "server_error",
    "unavailable",
    "high_load",
    "empty_stream",
    "end_without_closing",
    "truncate",
    "drop_connection",
    "first_event_delay",
    "stall",
)


@dataclass(frozen=True)
class Stall:
    """After `events` frames, send nothing for `ms` milliseconds, then continue."""

    events: int
    ms: float


@dataclass
class Behaviour:
    quota_exhausted: bool = False
    throttled: bool = False
    suspended: bool = False
    suspicious: bool = False  # 429 "Due to suspicious activity, …"
    credit_window: bool = False  # 429 "5-minute credit limit exceeded", DAILY_REQUEST_COUNT
    user_rate: bool = False  # 429 USER_REQUEST_RATE_EXCEEDED
    location_blocked: bool = False  # 400 INVALID_MODEL_ID for Claude models only
    token_ttl_s: float | None = None
    refresh_fails: bool = False
    rotate_refresh_token: bool = True  # real refresh tokens rotate (docs/kiro-protocol.md §2.3)
    latency_ms: float = 0.0
    server_error: bool = False
    unavailable: bool = False
    high_load: bool = False
    drop_connection: bool = False
    empty_stream: bool = False
    end_without_closing: bool = False
    truncate_after_events: int | None = None
    first_event_delay_ms: float = 0.0
    stall_after_events: Stall | None = None
    fault_rate: float = 0.0
    faults: tuple[str, ...] = ()  # empty: every name in FAULT_NAMES
    fault_seed: int | None = None
    fault_delay_ms: float = 2000.0  # how long a random first_event_delay / stall waits
    retry_after_s: int | None = None  # a 429 carries `Retry-After` when set
    quota_reset_at: float | None = None  # getUsageLimits nextDateReset when set
    usage_limit: int | None = None  # getUsageLimits usageLimit (default: the free tier's 50)
    models: tuple[str, ...] | None = None  # the model ids it is offered (None: every listed one)
    region: str = "us-east-1"  # the login's region at creation (regions.py)

    def updated(self, changes: Mapping[str, Any]) -> Behaviour:
        """A copy with `changes` applied; ValueError names an unknown key or a bad value."""
        values: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in changes.items():
            if key not in values:
                raise ValueError(f"unknown behaviour key {key!r}")
            values[key] = _convert(key, value)
        return Behaviour(**values)


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int)


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false")
    return value


def _non_negative(key: str, value: Any) -> float:
    if not _is_number(value) or value < 0:
        raise ValueError(f"{key} must be a number >= 0")
    return float(value)


def _optional_non_negative(key: str, value: Any) -> float | None:
    return None if value is None else _non_negative(key, value)


def _optional_count(key: str, value: Any) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or value < 0:
        raise ValueError(f"{key} must be an integer >= 0 or null")
    return int(value)


def _rate(key: str, value: Any) -> float:
    if not _is_number(value) or not 0 <= value <= 1:
        raise ValueError(f"{key} must be a number 0..1")
    return float(value)


def _fault_names(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(v in FAULT_NAMES for v in value):
        raise ValueError(f"{key} must be a list of names among {', '.join(FAULT_NAMES)}")
    return tuple(value)


def _seed(key: str, value: Any) -> int | None:
    if value is None:
        return None
    if not _is_int(value):
        raise ValueError(f"{key} must be an integer or null")
    return int(value)


def _models(key: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{key} must be a list of model ids or null")
    return tuple(value)


def _stall(key: str, value: Any) -> Stall | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"events", "ms"}:
        raise ValueError(f'{key} must be {{"events": n, "ms": m}} or null')
    events, ms = value["events"], value["ms"]
    if not _is_int(events) or events < 0 or not _is_number(ms) or ms < 0:
        raise ValueError(f"{key}: events must be an integer >= 0 and ms a number >= 0")
    return Stall(int(events), float(ms))


def _region(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _REGION.fullmatch(value):
        raise ValueError(f"{key} must be an AWS region name like eu-central-1")
    return value


_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d")


# behaviour key -> converter (default: a boolean flag); each raises ValueError naming the key.
_CONVERTERS: dict[str, Callable[[str, Any], Any]] = {
    "token_ttl_s": _optional_non_negative,
    "latency_ms": _non_negative,
    "first_event_delay_ms": _non_negative,
    "fault_delay_ms": _non_negative,
    "truncate_after_events": _optional_count,
    "retry_after_s": _optional_count,
    "quota_reset_at": _optional_non_negative,
    "usage_limit": _optional_count,
    "models": _models,
    "region": _region,
    "stall_after_events": _stall,
    "fault_rate": _rate,
    "faults": _fault_names,
    "fault_seed": _seed,
}


def _convert(key: str, value: Any) -> Any:
    convert: Callable[[str, Any], Any] = _CONVERTERS.get(key, _flag)
    return convert(key, value)
