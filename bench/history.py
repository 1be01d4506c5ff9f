"""The previous runs: a table of the headline figures of `bench/results/<UTC time>.json`,
newest first, so a regression shows. Older files lack some figures: their cells show "–"."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["RESULTS", "history_lines", "history_rows"]

Json = dict[str, Any]

RESULTS = Path(__file__).resolve().parent / "results"
KEEP = 12


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _fmt(spec: str) -> Callable[[Any], str]:
    def cell(value: Any) -> str:
        return "–" if not isinstance(value, int | float) else format(value, spec)

    return cell


def _dirty(value: Any) -> str:
    return "–" if value is None else ("dirty" if value else "clean")


def _max_tokens(value: Any) -> str:
    return "–" if value is None else str(value)


def _worst_variant(run: Json) -> float | None:
    ratios = [
        v.get("ratio_to_reference")
        for v in (_get(run, "sections", "cpu", "variants") or {}).values()
    ]
    ratios = [r for r in ratios if isinstance(r, int | float)]
    return max(ratios) if ratios else None


# (header, how to read the figure from one run's JSON, how to print it)
COLUMNS: tuple[tuple[str, Callable[[Json], Any], Callable[[Any], str]], ...] = (
    ("date (UTC)", lambda r: str(r.get("date", ""))[:16].replace("T", " "), str),
    ("git", lambda r: _get(r, "machine", "git_commit"), lambda v: v or "–"),
    ("src", lambda r: _get(r, "machine", "git_dirty"), _dirty),
    ("load", lambda r: (_get(r, "machine", "loadavg_at_start") or [None])[0], _fmt(".2f")),
    ("max_tokens", lambda r: _get(r, "sections", "cpu", "max_tokens"), _max_tokens),
    (
        "CPU ms / 100-event answer",
        lambda r: _get(r, "sections", "cpu", "plans", "100", "gateway_ms_per_request"),
        _fmt(".2f"),
    ),
    (
        "ratio to baseline",
        lambda r: _get(r, "sections", "cpu", "plans", "100", "ratio_gateway_to_emulator"),
        _fmt(".2f"),
    ),
    ("µs / event", lambda r: _get(r, "sections", "cpu", "fit", "per_event_us"), _fmt(".1f")),
    ("worst other API ratio", _worst_variant, _fmt(".2f")),
    ("KB / held stream", lambda r: _get(r, "sections", "hold", "kb_per_stream"), _fmt(".1f")),
    (
        "TTFT overhead c1 p50 (ms)",
        lambda r: _get(r, "sections", "ttft", "c1", "overhead_p50_ms"),
        _fmt(".2f"),
    ),
    (
        "TTFT overhead c64 p50 (ms)",
        lambda r: _get(r, "sections", "ttft", "c64", "overhead_p50_ms"),
        _fmt(".1f"),
    ),
    (
        "TTFT overhead 64 paced p50 (ms)",
        lambda r: _get(r, "sections", "ttft", "c64paced", "overhead_p50_ms"),
        _fmt(".1f"),
    ),
    ("failed sections", lambda r: ", ".join(sorted(r.get("errors") or {})), lambda v: v or "–"),
)


def _runs(directory: Path) -> list[Json]:
    runs = []
    for path in sorted(directory.glob("*.json")):
        if path.name == "latest.json":
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("date"):
            runs.append(data)
    runs.sort(key=lambda r: str(r["date"]), reverse=True)
    return runs


def history_rows(directory: Path = RESULTS, keep: int = KEEP) -> list[list[str]]:
    """One row of printed cells per run, newest first."""
    return [[show(read(run)) for _, read, show in COLUMNS] for run in _runs(directory)[:keep]]


def history_lines(directory: Path = RESULTS, keep: int = KEEP) -> list[str]:
    rows = history_rows(directory, keep)
    if not rows:
        return []
    lines = ["", f"## Previous runs (newest first, last {keep})", ""]
    lines.append("| " + " | ".join(header for header, _, _ in COLUMNS) + " |")
    lines.append("|" + "---|" * len(COLUMNS))
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += [
        "",
        "src: whether src/ had uncommitted changes (the run measured code not in that commit). "
        "Runs without max_tokens measured the 100-event answer without the client's limit. "
        "Worst other API ratio: the highest of the non-streaming and Anthropic figures over the "
        "OpenAI stream.",
    ]
    return lines
