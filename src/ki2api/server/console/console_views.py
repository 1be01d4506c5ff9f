"""Pure shaping for the console's JSON API: no I/O, table-tested.

Usage rows become a time series (`usage_series`: one entry per bucket, oldest first, empty
buckets included, TTFT p50 / p95 per bucket and overall); pool status items, health and login
facts become account views; client key records become key views; the settings table becomes
the settings in force with every secret hidden.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ki2api.settings import Settings, settings_table
from ki2api.state.base import ClientKeyRecord, Health, UsageRow, UsageSummary

__all__ = [
    "MAX_BUCKETS",
    "account_counts",
    "account_view",
    "clamp_window",
    "key_view",
    "percentile",
    "request_view",
    "settings_view",
    "usage_series",
]

MAX_BUCKETS = 500
_WINDOW = (60, 2_592_000)
_BUCKET = (10, 86_400)
_NOT_ERRORS = frozenset({"ok", "cancelled"})
_URL_LOGIN = re.compile(r"(://)[^/@\s]*@")  # a proxy URL's user:password@


def clamp_window(window_s: float, bucket_s: float) -> tuple[int, int]:
    """The window and bucket (seconds) the API serves: each in its range, at most 500 buckets."""
    window = int(min(max(window_s, _WINDOW[0]), _WINDOW[1]))
    bucket = int(min(max(bucket_s, _BUCKET[0]), _BUCKET[1]))
    bucket = max(bucket, math.ceil(window / MAX_BUCKETS))
    return window, min(bucket, window)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) of sorted `values`, interpolated; None when empty."""
    if not values:
        return None
    rank = (len(values) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(values) - 1)
    value = values[low] + (values[high] - values[low]) * (rank - low)
    return round(value, 1)


def _point(t: float | None) -> dict[str, Any]:
    point: dict[str, Any] = {"requests": 0, "errors": 0, "input_tokens": 0, "output_tokens": 0}
    if t is not None:
        point = {"t": t, **point}
    return point


def _close(point: dict[str, Any], ttfts: list[float]) -> dict[str, Any]:
    ttfts.sort()
    point["ttft_p50_ms"] = percentile(ttfts, 50)
    point["ttft_p95_ms"] = percentile(ttfts, 95)
    return point


def usage_series(
    rows: Iterable[UsageRow], *, now: float, window_s: int, bucket_s: int
) -> dict[str, Any]:
    """`totals` and `series` of the rows in (now - window_s, now]: the buckets end at `now`."""
    count = max(1, math.ceil(window_s / bucket_s))
    start = now - count * bucket_s
    points = [_point(round(start + i * bucket_s, 3)) for i in range(count)]
    ttfts: list[list[float]] = [[] for _ in range(count)]
    totals, every_ttft = _point(None), []
    for row in rows:
        if not start <= row.at <= now:
            continue
        i = min(int((row.at - start) // bucket_s), count - 1)
        for point in (points[i], totals):
            point["requests"] += 1
            point["errors"] += row.outcome not in _NOT_ERRORS
            point["input_tokens"] += row.input_tokens or 0
            point["output_tokens"] += row.output_tokens or 0
        if row.ttft_ms is not None:
            ttfts[i].append(row.ttft_ms)
            every_ttft.append(row.ttft_ms)
    return {
        "now": now,
        "window_s": window_s,
        "bucket_s": bucket_s,
        "totals": _close(totals, every_ttft),
        "series": [_close(p, t) for p, t in zip(points, ttfts, strict=True)],
    }


def _state(item: Mapping[str, Any]) -> str:
    if not item.get("enabled"):
        return "disabled"
    return "resting" if item.get("cooldown_s") else "ok"


def account_counts(items: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    states = [_state(i) for i in items]
    return {
        "total": len(items),
        "usable": states.count("ok"),
        "resting": states.count("resting"),
        "disabled": states.count("disabled"),
    }


def _quota(health: Health | None) -> dict[str, float | None] | None:
    if health is None or (health.quota_remaining is None and health.quota_limit is None):
        return None
    remaining, limit = health.quota_remaining, health.quota_limit
    used = None if remaining is None or limit is None else round(limit - remaining, 3)
    return {"used": used, "limit": limit, "remaining": remaining, "reset_at": health.quota_reset_at}


def account_view(
    item: Mapping[str, Any],
    health: Health | None,
    *,
    region: str | None,
    models: Iterable[str],
    network: str | None,
) -> dict[str, Any]:
    """One account as the console shows it (`item` is one of `AccountPool.status()`): never a
    token. What the gateway does not know is None / []."""
    login = item.get("login")
    login = dict(login) if isinstance(login, Mapping) else {}
    return {
        "id": item["id"],
        "source": item.get("source"),
        "enabled": bool(item.get("enabled")),
        "disabled_reason": item.get("disabled_reason"),
        "state": _state(item),
        "cooldown_s": item.get("cooldown_s") or 0.0,
        "reason": item.get("reason"),
        "inflight": item.get("inflight", 0),
        "max_inflight": item.get("max_inflight"),
        "warning": item.get("warning"),
        "quota": _quota(health),
        "region": region,
        "profile_arn": login.get("profile_arn"),
        "models": sorted(models),
        "login": login,
        "network": network,
    }


def _limits(record: ClientKeyRecord) -> dict[str, Any]:
    models = [m.strip() for m in (record.models or "").split(",") if m.strip()]
    return {
        "rpm": record.rpm,
        "tpm": record.tpm,
        "daily_tokens": record.daily_tokens,
        "monthly_requests": record.monthly_requests,
        "models": models,
    }


def key_view(record: ClientKeyRecord, usage: UsageSummary | None, now: float) -> dict[str, Any]:
    """A client key as the console shows it: never its hash, never the key."""
    state = record.state
    if state == "active" and record.expires_at is not None and record.expires_at <= now:
        state = "expired"
    return {
        "name": record.name,
        "hint": record.hint,
        "state": state,
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "limits": _limits(record),
        "usage_24h": {
            "requests": usage.requests if usage else 0,
            "input_tokens": usage.input_tokens if usage else 0,
            "output_tokens": usage.output_tokens if usage else 0,
        },
    }


def request_view(row: UsageRow) -> dict[str, Any]:
    """One usage row: names and numbers, never any content."""
    return {
        "at": row.at,
        "endpoint": row.endpoint,
        "model": row.model,
        "account_id": row.account_id,
        "key": row.client_key,
        "outcome": row.outcome,
        "status": row.status,
        "stream": row.stream,
        "latency_ms": row.latency_ms,
        "ttft_ms": row.ttft_ms,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "attempts": row.attempts,
    }


def _shown(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list | frozenset | set):
        return ",".join(_shown(v) for v in value)
    if isinstance(value, Mapping):
        return ",".join(f"{k}={_shown(v)}" for k, v in value.items())
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _default_of(f: dataclasses.Field[Any]) -> object:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def settings_view(settings: Settings) -> list[dict[str, Any]]:
    """Every setting read from the environment, as in force; a secret (a field kept out of
    repr) shows only "set" / "not set" and no default."""
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    out: list[dict[str, Any]] = []
    for name, spec in settings_table():
        if spec.env is None:
            continue
        f = fields[name]
        value, default = getattr(settings, name), _default_of(f)
        secret = not f.repr
        given = value != default
        if secret:
            shown, default_shown = ("set" if value else "not set"), ""
        else:  # a URL's login (KI2API_PROXY's user:password@) is never shown either
            shown = _URL_LOGIN.sub(r"\1***@", _shown(value))
            default_shown = _URL_LOGIN.sub(r"\1***@", _shown(default))
        out.append(
            {
                "name": spec.env,
                "value": shown,
                "default": default_shown,
                "help": spec.help,
                "secret": secret,
                "set": given,
            }
        )
    return out
