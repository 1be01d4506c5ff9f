"""The console's pure shaping: windows, buckets, percentiles, account and key views, settings."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from ki2api.server.console.console_views import (
    account_counts,
    account_view,
    clamp_window,
    key_view,
    percentile,
    request_view,
    settings_view,
    usage_series,
)
from ki2api.settings import Settings
from ki2api.state.base import ClientKeyRecord, Health, UsageRow, UsageSummary

NOW = 1_800_000_000.0


def row(at: float, outcome: str = "ok", ttft: float | None = None, **kw: Any) -> UsageRow:
    base: dict[str, Any] = {
        "client_key": "key-1",
        "account_id": "a",
        "model": "m",
        "input_tokens": 10,
        "output_tokens": 5,
        "latency_ms": 50.0,
    }
    return UsageRow(at=at, outcome=outcome, ttft_ms=ttft, **{**base, **kw})


CLAMPS = [
    ("as asked", 3600, 60, (3600, 60)),
    ("window too small", 1, 60, (60, 60)),
    ("window too big", 10**9, 86_400, (2_592_000, 86_400)),
    ("bucket too small", 3600, 1, (3600, 10)),
    ("too many buckets", 86_400, 10, (86_400, 173)),
    ("bucket wider than the window", 60, 3600, (60, 60)),
]


@pytest.mark.parametrize(("name", "window", "bucket", "out"), CLAMPS, ids=[c[0] for c in CLAMPS])
def test_clamp_window(name: str, window: float, bucket: float, out: tuple[int, int]) -> None:
    assert clamp_window(window, bucket) == out
    w, b = clamp_window(window, bucket)
    assert -(-w // b) <= 500


PERCENTILES = [
    ("empty", [], 50, None),
    ("one", [7.0], 95, 7.0),
    ("median of odd", [1.0, 2.0, 3.0], 50, 2.0),
    ("median of even", [1.0, 2.0, 3.0, 4.0], 50, 2.5),
    ("p95 interpolated", [float(i) for i in range(1, 101)], 95, 95.05),
    ("p0 and p100", [3.0, 9.0], 100, 9.0),
]


@pytest.mark.parametrize(
    ("name", "values", "q", "out"), PERCENTILES, ids=[p[0] for p in PERCENTILES]
)
def test_percentile(name: str, values: list[float], q: float, out: float | None) -> None:
    assert percentile(values, q) == (round(out, 1) if out is not None else None)


def test_series_buckets_oldest_first_with_empty_buckets_and_percentiles() -> None:
    rows = [
        row(NOW - 1000),  # outside the window
        row(NOW - 290, ttft=100.0),  # bucket 0 (starts at NOW - 300)
        row(NOW - 250, "rate_limited", ttft=300.0, input_tokens=None, output_tokens=None),
        row(NOW - 5, "cancelled", ttft=None),  # last bucket; cancelled is not an error
        row(NOW - 1, ttft=200.0),
        row(NOW + 5),  # in the future: left out
    ]
    out = usage_series(rows, now=NOW, window_s=300, bucket_s=60)
    series = out["series"]
    assert [p["t"] for p in series] == [NOW - 300 + 60 * i for i in range(5)]
    assert [p["requests"] for p in series] == [2, 0, 0, 0, 2]
    assert [p["errors"] for p in series] == [1, 0, 0, 0, 0]
    assert series[0]["input_tokens"] == 10 and series[0]["output_tokens"] == 5
    assert series[0]["ttft_p50_ms"] == 200.0 and series[0]["ttft_p95_ms"] == 290.0
    assert series[1] == {
        "t": NOW - 240,
        "requests": 0,
        "errors": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "ttft_p50_ms": None,
        "ttft_p95_ms": None,
    }
    assert series[4]["ttft_p50_ms"] == 200.0  # only the row that knew its ttft
    totals = out["totals"]
    assert totals["requests"] == 4 and totals["errors"] == 1
    assert totals["input_tokens"] == 30 and totals["output_tokens"] == 15
    assert totals["ttft_p50_ms"] == 200.0 and totals["ttft_p95_ms"] == 290.0
    assert (out["now"], out["window_s"], out["bucket_s"]) == (NOW, 300, 60)


def test_series_of_no_rows_is_all_zeros() -> None:
    out = usage_series([], now=NOW, window_s=600, bucket_s=60)
    assert len(out["series"]) == 10
    assert all(p["requests"] == 0 and p["ttft_p95_ms"] is None for p in out["series"])
    assert out["totals"]["ttft_p50_ms"] is None


ITEM = {
    "id": "a1",
    "source": "store",
    "enabled": True,
    "disabled_reason": None,
    "cooldown_s": 0.0,
    "reason": None,
    "inflight": 1,
    "max_inflight": 4,
    "login": {"profile_arn": "arn:aws:codewhisperer:us-east-1:1:profile/X", "expires_at": None},
}
STATES = [
    ("ok", {}, "ok"),
    ("resting", {"cooldown_s": 12.5, "reason": "throttled"}, "resting"),
    ("disabled", {"enabled": False, "disabled_reason": "disabled by user"}, "disabled"),
    ("disabled and resting", {"enabled": False, "cooldown_s": 3.0}, "disabled"),
]


@pytest.mark.parametrize(("name", "change", "state"), STATES, ids=[s[0] for s in STATES])
def test_account_state(name: str, change: dict[str, Any], state: str) -> None:
    view = account_view({**ITEM, **change}, None, region=None, models=(), network=None)
    assert view["state"] == state
    assert account_counts([{**ITEM, **change}])[{"ok": "usable"}.get(state, state)] == 1


QUOTAS = [
    ("unknown", None, None),
    ("nothing known", Health("a1"), None),
    (
        "full",
        Health("a1", quota_remaining=30.0, quota_limit=50.0, quota_reset_at=NOW),
        {"used": 20.0, "limit": 50.0, "remaining": 30.0, "reset_at": NOW},
    ),
    (
        "remaining only",
        Health("a1", quota_remaining=3.0),
        {"used": None, "limit": None, "remaining": 3.0, "reset_at": None},
    ),
]


@pytest.mark.parametrize(("name", "health", "quota"), QUOTAS, ids=[q[0] for q in QUOTAS])
def test_account_quota(name: str, health: Health | None, quota: dict[str, Any] | None) -> None:
    view = account_view(ITEM, health, region="us-east-1", models={"b", "a"}, network="direct")
    assert view["quota"] == quota
    assert view["models"] == ["a", "b"] and view["region"] == "us-east-1"
    assert view["profile_arn"] == "arn:aws:codewhisperer:us-east-1:1:profile/X"


def test_key_view_shows_state_limits_usage_and_never_the_hash() -> None:
    record = ClientKeyRecord(
        id="ck-1",
        name="alice",
        key_hash="f" * 64,
        hint="sk-ki2api-…abcd",
        rpm=5,
        models="claude-sonnet-*, claude-haiku-*",
        expires_at=NOW - 1,
    )
    usage = UsageSummary("alice", 3, 3, 30, 15, 20.0)
    view = key_view(record, usage, NOW)
    assert view["state"] == "expired"
    assert view["limits"] == {
        "rpm": 5,
        "tpm": None,
        "daily_tokens": None,
        "monthly_requests": None,
        "models": ["claude-sonnet-*", "claude-haiku-*"],
    }
    assert view["usage_24h"] == {"requests": 3, "input_tokens": 30, "output_tokens": 15}
    assert "f" * 64 not in str(view)
    revoked = key_view(dataclasses.replace(record, state="revoked"), None, NOW)
    assert revoked["state"] == "revoked" and revoked["usage_24h"]["requests"] == 0


def test_request_view_has_the_documented_fields() -> None:
    view = request_view(row(NOW, ttft=12.0, status=200, endpoint="/v1/messages", stream=True))
    assert set(view) == {
        "at", "endpoint", "model", "account_id", "key", "outcome", "status", "stream",
        "latency_ms", "ttft_ms", "input_tokens", "output_tokens", "attempts",
    }  # fmt: skip
    assert view["ttft_ms"] == 12.0 and view["status"] == 200 and view["key"] == "key-1"


def test_settings_hide_every_secret() -> None:
    secrets = {
        "api_keys": ("client-key-SECRET1",),
        "admin_key": "admin-SECRET2",
        "kiro_refresh_token": "aor-SECRET3",
        "kiro_access_token": "aoa-SECRET4",
        "metrics_token": "metrics-SECRET5",
        "proxies": ("http://user:SECRET6@proxy.example:3128", "socks5://px.example:1080"),
    }
    view = settings_view(Settings(**secrets))  # type: ignore[arg-type]
    assert "SECRET" not in str(view)
    by_name = {s["name"]: s for s in view}
    for name in ("API_KEY", "ADMIN_KEY", "KIRO_REFRESH_TOKEN", "KI2API_METRICS_TOKEN"):
        assert by_name[name]["secret"] is True
        assert by_name[name]["value"] == "set" and by_name[name]["default"] == ""
    assert by_name["KIRO_API_KEY"]["value"] == "not set"
    assert by_name["KI2API_PROXY"]["value"] == (
        "http://***@proxy.example:3128,socks5://px.example:1080"
    )
    port = by_name["PORT"]
    assert port == {
        "name": "PORT",
        "value": "8989",
        "default": "8989",
        "help": port["help"],
        "secret": False,
        "set": False,
    }
    assert port["help"]
    assert by_name["ADMIN_KEY"]["set"] is True
