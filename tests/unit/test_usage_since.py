"""The store's usage rows since a time (the console's series): SQLite and Redis alike, bounded."""

from __future__ import annotations

import pytest

from ki2api.state.base import UsageRow
from tests.support.stores import StoreFactory

NOW = 1_800_000_000.0


def row(at: float, key: str, ttft: float | None = None, status: int | None = None) -> UsageRow:
    return UsageRow(
        at=at,
        client_key=key,
        account_id="a",
        model="m",
        input_tokens=1,
        output_tokens=2,
        latency_ms=10.0,
        outcome="ok",
        ttft_ms=ttft,
        status=status,
    )


ROWS = [
    row(NOW - 500, "key-1"),
    row(NOW - 30, "alice", 12.5, 200),
    row(NOW - 20, "key-1", None, 429),
    row(NOW - 10, "alice", 40.0, 200),
]
CASES = [
    ("since", NOW - 100, None, 10, [NOW - 30, NOW - 20, NOW - 10]),
    ("one key", NOW - 100, "alice", 10, [NOW - 30, NOW - 10]),
    ("the newest within the limit, oldest first", NOW - 1000, None, 2, [NOW - 20, NOW - 10]),
    ("nothing since", NOW, None, 10, []),
    ("a key with no rows", NOW - 1000, "nobody", 10, []),
]


@pytest.mark.parametrize(("name", "since", "key", "limit", "ats"), CASES, ids=[c[0] for c in CASES])
async def test_usage_since(
    store_factory: StoreFactory,
    name: str,
    since: float,
    key: str | None,
    limit: int,
    ats: list[float],
) -> None:
    store = store_factory()
    await store.record_usage(ROWS)
    got = await store.usage_since(since, key=key, limit=limit)
    assert [r.at for r in got] == ats
    for r in got:  # ttft_ms and status come back as written
        assert r == next(w for w in ROWS if w.at == r.at)
