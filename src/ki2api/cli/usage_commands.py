"""`ki2api usage`: what the usage log says, summed per account, client key, model or outcome.

Reads the state store the gateway writes (one row per chat request, see docs/accounts.md);
never shows a key or a token: client keys appear as `key-N`, the N-th key of API_KEY, or by
the name of a `ki2api keys` key (docs/client-keys.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from ki2api.settings import Settings
from ki2api.state.base import USAGE_GROUPS, UsageSummary
from ki2api.state.open_store import STORE_ERRORS, open_spec, store_spec

__all__ = ["add_usage_parser", "format_summary", "run_usage"]

_HEAD = ("REQUESTS", "OK", "ERRORS", "INPUT TOKENS", "OUTPUT TOKENS", "AVG LATENCY")


def add_usage_parser(sub: Any) -> None:
    usage = sub.add_parser("usage", help="requests and tokens from the usage log")
    usage.add_argument(
        "--hours", type=float, default=24.0, help="how far back to look (default 24)"
    )
    usage.add_argument(
        "--by",
        choices=sorted(USAGE_GROUPS),
        default="account",
        help="group rows by (default: account)",
    )
    usage.add_argument("--json", action="store_true", help="machine-readable output")


def format_summary(rows: list[UsageSummary], by: str, hours: float) -> str:
    """A plain-text table with a total line. Pure."""
    if not rows:
        return f"no requests in the last {hours:g} h"
    table: list[tuple[str, ...]] = [(by.upper(), *_HEAD)]
    for r in rows:
        table.append(_cells(r.group or "-", r))
    total = UsageSummary(
        group=None,
        requests=sum(r.requests for r in rows),
        ok=sum(r.ok for r in rows),
        input_tokens=sum(r.input_tokens for r in rows),
        output_tokens=sum(r.output_tokens for r in rows),
        avg_latency_ms=sum(r.avg_latency_ms * r.requests for r in rows)
        / max(1, sum(r.requests for r in rows)),
    )
    table.append(_cells("total", total))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in table
    ]
    return f"last {hours:g} h, by {by}\n" + "\n".join(line.rstrip() for line in lines)


def _cells(name: str, r: UsageSummary) -> tuple[str, ...]:
    return (
        name,
        str(r.requests),
        str(r.ok),
        str(r.requests - r.ok),
        f"{r.input_tokens:,}",
        f"{r.output_tokens:,}",
        f"{r.avg_latency_ms:,.0f} ms",
    )


async def _summary(settings: Settings, since: float, by: str) -> list[UsageSummary]:
    spec = store_spec(settings)
    if spec.path is not None and not spec.path.exists():
        return []
    store = open_spec(spec)
    try:
        return await store.usage_summary(since=since, by=by)
    finally:
        await store.aclose()


def run_usage(settings: Settings, args: argparse.Namespace) -> int:
    if args.hours <= 0:
        print("ki2api usage: --hours must be more than 0", file=sys.stderr)
        return 2
    try:
        rows = asyncio.run(_summary(settings, time.time() - args.hours * 3600, args.by))
    except STORE_ERRORS as exc:
        print(f"ki2api usage: cannot read {store_spec(settings).shown}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([vars(r) for r in rows], indent=2))
    else:
        print(format_summary(rows, args.by, args.hours))
    return 0
