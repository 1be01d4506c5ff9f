"""`parse_usage_limits`: getUsageLimits answers (docs/kiro-protocol.md §4.4) -> quota figures."""

from __future__ import annotations

from typing import Any

import pytest

from ki2api.kiro.accounts.quota import Quota, parse_usage_limits
from kiro_emulator.models import usage_limits

RESET = 1767225600


def credit(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "resourceType": "CREDIT",
        "currentUsage": 12,
        "currentUsageWithPrecision": 12.5,
        "usageLimit": 50,
        "usageLimitWithPrecision": 50.0,
        "nextDateReset": RESET,
    }
    base.update(fields)
    return base


def body(*entries: Any, **top: Any) -> dict[str, Any]:
    return {"usageBreakdownList": list(entries), **top}


CASES: list[tuple[str, Any, Quota]] = [
    ("plain-credit", body(credit()), Quota(37.5, 50.0, 12.5, RESET, None)),
    (
        "integers-without-precision",
        body(credit(currentUsageWithPrecision=None, usageLimitWithPrecision=None)),
        Quota(38.0, 50.0, 12.0, RESET, None),
    ),
    (
        "active-free-trial-added",
        body(
            credit(
                freeTrialInfo={
                    "freeTrialStatus": "ACTIVE",
                    "usageLimitWithPrecision": 500.0,
                    "currentUsageWithPrecision": 3.5,
                }
            )
        ),
        Quota(534.0, 550.0, 16.0, RESET, None),
    ),
    (
        "expired-free-trial-ignored",
        body(credit(freeTrialInfo={"freeTrialStatus": "EXPIRED", "usageLimit": 500})),
        Quota(37.5, 50.0, 12.5, RESET, None),
    ),
    (
        "active-bonuses-only",
        body(
            credit(
                bonuses=[
                    {"status": "ACTIVE", "usageLimit": 100, "currentUsage": 10},
                    {"status": "EXPIRED", "usageLimit": 1000, "currentUsage": 0},
                    {"status": "ACTIVE", "usageLimit": 20},
                    "junk",
                ]
            )
        ),
        Quota(147.5, 170.0, 22.5, RESET, None),
    ),
    (
        "credit-preferred-over-first",
        body({"resourceType": "OTHER", "usageLimit": 5, "currentUsage": 5}, credit()),
        Quota(37.5, 50.0, 12.5, RESET, None),
    ),
    (
        "first-entry-without-credit",
        body({"resourceType": "AGENTIC_REQUEST", "usageLimit": 5, "currentUsage": 1}),
        Quota(4.0, 5.0, 1.0, None, None),
    ),
    (
        "overage-clamped-at-zero",
        body(credit(currentUsageWithPrecision=60.0)),
        Quota(0.0, 50.0, 60.0, RESET, None),
    ),
    (
        "reset-in-milliseconds",
        body(credit(nextDateReset=RESET * 1000)),
        Quota(37.5, 50.0, 12.5, RESET, None),
    ),
    (
        "reset-from-top-level",
        body(credit(nextDateReset=None), nextDateReset=RESET),
        Quota(37.5, 50.0, 12.5, RESET, None),
    ),
    (
        "reset-as-iso-string",
        body(credit(nextDateReset="2026-01-01T00:00:00Z")),
        Quota(37.5, 50.0, 12.5, RESET, None),
    ),
    (
        "subscription-title",
        body(credit(), subscriptionInfo={"type": "Q_FREE", "subscriptionTitle": "KIRO FREE"}),
        Quota(37.5, 50.0, 12.5, RESET, "KIRO FREE"),
    ),
    (
        "subscription-type-fallback",
        body(credit(), subscriptionInfo={"type": "Q_DEVELOPER_STANDALONE_PRO"}),
        Quota(37.5, 50.0, 12.5, RESET, "Q_DEVELOPER_STANDALONE_PRO"),
    ),
    (
        "usage-unknown",
        body(credit(currentUsage=None, currentUsageWithPrecision="lots")),
        Quota(None, 50.0, None, RESET, None),
    ),
    (
        "numeric-strings",
        body({"usageLimit": "50", "currentUsage": "10.5", "nextDateReset": str(RESET)}),
        Quota(39.5, 50.0, 10.5, RESET, None),
    ),
    ("empty-object", {}, Quota(None, None, None, None, None)),
    ("not-an-object", ["a list"], Quota(None, None, None, None, None)),
    (
        "odd-types-everywhere",
        {
            "usageBreakdownList": "nope",
            "nextDateReset": True,
            "subscriptionInfo": [],
        },
        Quota(None, None, None, None, None),
    ),
    (
        "nan-and-bool-ignored",
        body({"usageLimit": float("nan"), "currentUsage": True, "nextDateReset": -5}),
        Quota(None, None, None, None, None),
    ),
    (
        "trial-without-base-figures",
        body(
            {
                "freeTrialInfo": {
                    "freeTrialStatus": "active",
                    "usageLimit": 500,
                    "currentUsage": 100,
                }
            }
        ),
        Quota(400.0, 500.0, 100.0, None, None),
    ),
]


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parse_usage_limits(body: Any, expected: Quota) -> None:
    assert parse_usage_limits(body) == expected


@pytest.mark.parametrize(
    ("used", "exhausted", "remaining"),
    [(0.0, False, 50.0), (7.0, False, 43.0), (3.0, True, 0.0)],
    ids=["fresh", "some-used", "exhausted"],
)
def test_emulator_answer_is_understood(used: float, exhausted: bool, remaining: float) -> None:
    now = 1_760_000_000.0
    quota = parse_usage_limits(usage_limits(used, exhausted, now, "a@example.com"))
    assert quota.remaining == remaining
    assert quota.limit == 50.0
    assert quota.subscription == "KIRO FREE"
    assert quota.reset_at is not None and quota.reset_at > now
