"""The usage log of `RedisStore`: a capped stream (XADD MAXLEN ~), one entry per row.

A batch of rows and the tokens it charges to client keys are one script (RECORD_USAGE), so a
key's counters move with its rows. The stream keeps about `usage_max_rows` rows (the oldest go
first): `usage_count` counts what it keeps. An entry's id is its row's `at` in ms (or the
previous id when that is later: ids only grow), never before the row's `at`, so the rows since
a time are found by reading the stream backwards from its end down to that time, never the
whole stream.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import fields
from typing import Any

import orjson

from ki2api.state import redis_scripts as lua
from ki2api.state.base import USAGE_GROUPS, UsageRow, UsageSummary
from ki2api.state.client_key_rules import token_charges
from ki2api.state.redis_base import RedisBase

__all__ = ["RedisUsage", "charges"]

_USAGE_COLS = tuple(f.name for f in fields(UsageRow))
_CHUNK = 5_000  # entries read per XREVRANGE


def charges(rows: Sequence[UsageRow]) -> list[Any]:
    """(key name, period, window, tokens) of every row naming a client key, flat
    (`client_key_rules.token_charges`)."""
    return [part for charge in token_charges(rows) for part in charge]


def _row(raw: bytes) -> UsageRow:
    return UsageRow(*orjson.loads(raw))


class RedisUsage(RedisBase):
    """`StateStore`'s usage-log methods on Redis."""

    async def record_usage(
        self,
        rows: Sequence[UsageRow],
        *,
        batch: str | None = None,
        again: bool = False,
        charge: bool = True,
    ) -> None:
        """`StateStore.record_usage` (RECORD_USAGE says how a batch written `again` is found);
        `charge=False` (a migration copying old rows, and the counters as they were): the rows
        only."""
        if not rows:
            return
        encoded: list[Any] = []
        for r in rows:
            values = [getattr(r, c) for c in _USAGE_COLS]
            encoded += [max(0, int(r.at * 1000)), orjson.dumps(values)]
        look_from = min(encoded[::2]) if again and batch else ""
        args = (
            self._usage_max,
            self._p,
            len(rows),
            batch or "",
            look_from,
            *encoded,
            *(charges(rows) if charge else ()),
        )
        await self._run(lua.RECORD_USAGE, [self._k("usage")], args)

    async def usage_count(self) -> int:
        return int(await self._r.xlen(self._k("usage")))

    async def usage_rows(self, *, limit: int = 100) -> list[UsageRow]:
        if limit <= 0:
            return []
        found = await self._entries("+", "-", limit)
        return [_row(entry[b"r"]) for _, entry in reversed(found)]

    async def _entries(
        self, top: bytes | str, bottom: str, count: int
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        found: Any = await self._r.xrevrange(self._k("usage"), top, bottom, count=count)
        return list(found or [])

    async def _rows_since(self, since: float) -> list[UsageRow]:
        """Rows with `at >= since`, newest written first."""
        floor = max(0, int(since * 1000))
        out: list[UsageRow] = []
        top: bytes | str = "+"
        while True:
            found = await self._entries(top, f"{floor}-0", _CHUNK)
            out += [r for r in (_row(entry[b"r"]) for _, entry in found) if r.at >= since]
            if len(found) < _CHUNK:
                return out
            top = b"(" + found[-1][0]

    async def usage_since(
        self, since: float, *, key: str | None = None, limit: int = 200_000
    ) -> list[UsageRow]:
        rows = [r for r in await self._rows_since(since) if key is None or r.client_key == key]
        rows.sort(key=lambda r: r.at)
        return rows[-limit:] if limit > 0 else []

    async def usage_summary(self, *, since: float, by: str) -> list[UsageSummary]:
        column = USAGE_GROUPS[by]  # KeyError for anything else, as SQLite's
        sums: dict[Any, list[float]] = {}
        for row in await self._rows_since(since):
            s = sums.setdefault(getattr(row, column), [0, 0, 0, 0, 0.0])
            s[0] += 1
            s[1] += row.outcome == "ok"
            s[2] += row.input_tokens or 0
            s[3] += row.output_tokens or 0
            s[4] += row.latency_ms
        ordered = sorted(sums.items(), key=lambda kv: (-kv[1][0], kv[0] is None, kv[0] or ""))
        return list(_summaries(ordered))


def _summaries(ordered: list[tuple[Any, list[float]]]) -> Iterator[UsageSummary]:
    for group, (n, ok, given, taken, latency) in ordered:
        yield UsageSummary(group, int(n), int(ok), int(given), int(taken), latency / n)
