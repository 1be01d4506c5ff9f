"""The usage log summed up: the store's sums (SQLite's GROUP BY, Redis alike) and the CLI's
table (pure)."""

from __future__ import annotations

import pytest

from ki2api.cli.usage_commands import format_summary
from ki2api.state.base import UsageRow, UsageSummary
from tests.support.stores import StoreFactory

NOW = 1_800_000_000.0


def row(
    at: float, account: str | None, key: str, model: str, outcome: str, i: int, o: int
) -> UsageRow:
    return UsageRow(
        at=at,
        client_key=key,
        account_id=account,
        model=model,
        input_tokens=i if outcome == "ok" else None,
        output_tokens=o if outcome == "ok" else None,
        latency_ms=100.0,
        outcome=outcome,
    )


ROWS = [
    row(NOW - 10, "a", "key-1", "m1", "ok", 10, 5),
    row(NOW - 20, "a", "key-2", "m2", "ok", 20, 7),
    row(NOW - 30, "b", "key-1", "m1", "rate_limited", 30, 9),
    row(NOW - 40, None, "invalid:1234abcd", "m1", "authentication", 0, 0),
    row(NOW - 7200, "b", "key-1", "m1", "ok", 1000, 1000),  # too old for the last hour
]


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        ("account", [("a", 2, 2, 30, 12), ("b", 1, 0, 0, 0), (None, 1, 0, 0, 0)]),
        ("key", [("key-1", 2, 1, 10, 5), ("invalid:1234abcd", 1, 0, 0, 0), ("key-2", 1, 1, 20, 7)]),
        ("model", [("m1", 3, 1, 10, 5), ("m2", 1, 1, 20, 7)]),
        (
            "outcome",
            [("ok", 2, 2, 30, 12), ("authentication", 1, 0, 0, 0), ("rate_limited", 1, 0, 0, 0)],
        ),
    ],
    ids=["account", "key", "model", "outcome"],
)
async def test_summary_groups_the_last_hour(
    store_factory: StoreFactory, by: str, expected: list[tuple[object, ...]]
) -> None:
    store = store_factory()
    await store.record_usage(ROWS)
    got = await store.usage_summary(since=NOW - 3600, by=by)
    assert [(g.group, g.requests, g.ok, g.input_tokens, g.output_tokens) for g in got] == expected


async def test_summary_refuses_an_unknown_grouping(store_factory: StoreFactory) -> None:
    store = store_factory()
    with pytest.raises(KeyError):
        await store.usage_summary(since=0, by="id; DROP TABLE usage")


def test_table_has_a_total_line() -> None:
    rows = [
        UsageSummary("acct-1", 3, 2, 1200, 300, 100.0),
        UsageSummary(None, 1, 0, 0, 0, 500.0),
    ]
    text = format_summary(rows, "account", 24)
    lines = text.splitlines()
    assert lines[0] == "last 24 h, by account"
    assert lines[1].split() == [
        "ACCOUNT",
        "REQUESTS",
        "OK",
        "ERRORS",
        "INPUT",
        "TOKENS",
        "OUTPUT",
        "TOKENS",
        "AVG",
        "LATENCY",
    ]
    assert lines[2].split() == ["acct-1", "3", "2", "1", "1,200", "300", "100", "ms"]
    assert lines[3].split()[0] == "-"
    assert lines[4].split() == ["total", "4", "2", "2", "1,200", "300", "200", "ms"]


def test_nothing_logged_says_so() -> None:
    assert format_summary([], "model", 1.5) == "no requests in the last 1.5 h"
