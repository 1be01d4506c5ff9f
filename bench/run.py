"""`make bench`: run every section, write bench/results/{latest,<UTC time>}.{json,md}.

`python -m bench.run --only NAME` runs one section alone on processes of its own (`cpu` and
`ttft` after a warm-up), prints its table and raw figures, and writes nothing.

Processes: this driver, the emulator, the gateway and the load generator, all on 127.0.0.1, each
in its own process group and always stopped at the end. Sections that fail are recorded in the
results (with the tail of the servers' logs) and the run goes on with the next one.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore

from bench.cpu import cpu_section
from bench.decoder import measure_decoders
from bench.faults import faults_section
from bench.history import RESULTS
from bench.loop import loop_section
from bench.proc import raise_nofile_limit
from bench.profile import profile_section
from bench.report import goal_rows
from bench.report_md import markdown
from bench.sections import hold_section, ttft_section, warmup_section
from bench.stack import LoadDriver, Stack, start_stack
from bench.store_cost import store_section
from bench.workers import workers_section

__all__ = ["main"]

_REPO = RESULTS.parent.parent


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=_REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def machine_facts() -> dict[str, Any]:
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "mem_total_mb": mem_kb // 1024,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "botocore": botocore.__version__,
        "git_commit": _git("rev-parse", "--short", "HEAD") or "unknown",
        # Colleagues' uncommitted work in the tree is measured too: say so.
        "git_dirty": bool(_git("status", "--porcelain", "--", "src")),
        "loadavg_at_start": os.getloadavg(),
    }


def _guarded(results: dict[str, Any], name: str, fn: Callable[[], Any]) -> None:
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    try:
        results["sections"][name] = fn()
    except Exception as exc:
        results["errors"][name] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    print(f"[bench] {name} took {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)


def _stack_sections(results: dict[str, Any], root: Path, logs: Path, load: LoadDriver) -> None:
    counter = itertools.count(1)

    def new_stack() -> Stack:
        return start_stack(root / f"stack-{next(counter)}", logs)

    try:
        stack = new_stack()
    except Exception as exc:
        results["errors"]["stack"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    else:
        try:
            _guarded(results, "warmup", lambda: warmup_section(stack, load))
            _guarded(results, "ttft", lambda: ttft_section(stack, load))
            _guarded(results, "cpu", lambda: cpu_section(stack, load))
            _guarded(results, "loop", lambda: loop_section(stack))
        finally:
            stack.stop()
    _guarded(results, "hold", lambda: hold_section(new_stack, load))
    # Its own emulator and gateways: one worker and `--workers 2`, side by side.
    _guarded(results, "workers", lambda: workers_section(root / "workers", logs, load))
    # Its own emulator and a gateway run under py-spy.
    _guarded(results, "profile", lambda: profile_section(root / "profile", logs, load))
    # Its own emulator (three accounts) and a fresh gateway per fault rate.
    _guarded(results, "faults", lambda: faults_section(root / "faults", logs))
    # Its own redis-server and two stacks (SQLite and Redis), side by side.
    _guarded(results, "store", lambda: store_section(root / "store", logs))


def _log_tails(logs: Path) -> dict[str, str]:
    tails: dict[str, str] = {}
    for path in sorted(logs.glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()
        if lines:
            tails[path.stem] = "\n".join(lines[-15:])
    return tails


def _new_results() -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "sections": {},
        "errors": {},
    }


def _finish(results: dict[str, Any], t0: float) -> dict[str, Any]:
    results["duration_s"] = time.monotonic() - t0
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    results["goals"] = goal_rows(results)
    return results


Standalone = Callable[[Path, Path], Any]


def _with_load(section: Callable[[Path, Path, LoadDriver], Any]) -> Standalone:
    """A section that starts its own servers and needs a load generator."""

    def run(root: Path, logs: Path) -> Any:
        load = LoadDriver(logs)
        try:
            return section(root, logs, load)
        finally:
            load.stop()

    return run


def _on_stack(section: Callable[[Stack, LoadDriver], Any]) -> Standalone:
    """A section of the shared stack, alone: a fresh stack, warmed up as in a full run."""

    def run(root: Path, logs: Path, load: LoadDriver) -> Any:
        stack = start_stack(root / "stack", logs)
        try:
            warmup_section(stack, load)
            return section(stack, load)
        finally:
            stack.stop()

    return _with_load(run)


# `--only NAME` runs one of these alone.
STANDALONE: dict[str, Standalone] = {
    "decoder": lambda root, logs: measure_decoders(),
    "faults": lambda root, logs: faults_section(root / "faults", logs),
    "store": lambda root, logs: store_section(root / "store", logs),
    "profile": _with_load(lambda root, logs, load: profile_section(root / "p", logs, load)),
    "workers": _with_load(lambda root, logs, load: workers_section(root / "w", logs, load)),
    "cpu": _on_stack(cpu_section),
    "ttft": _on_stack(ttft_section),
}


def run_only(name: str) -> dict[str, Any]:
    t0 = time.monotonic()
    results = _new_results()
    with tempfile.TemporaryDirectory(prefix="ki2api-bench-") as tmp:
        root, logs = Path(tmp), Path(tmp) / "logs"
        logs.mkdir()
        _guarded(results, name, lambda: STANDALONE[name](root, logs))
        if results["errors"]:
            results["log_tails"] = _log_tails(logs)
    _finish(results, t0)
    results["goals"] = [row for row in results["goals"] if row["measured"] is not None]
    return results


def run_all() -> dict[str, Any]:
    t0 = time.monotonic()
    results = _new_results()
    # Pure CPU first, while nothing else of ours is running.
    _guarded(results, "decoder", measure_decoders)
    with tempfile.TemporaryDirectory(prefix="ki2api-bench-") as tmp:
        root, logs = Path(tmp), Path(tmp) / "logs"
        logs.mkdir()
        load = LoadDriver(logs)
        try:
            _stack_sections(results, root, logs, load)
        finally:
            load.stop()
            if results["errors"]:
                results["log_tails"] = _log_tails(logs)
    return _finish(results, t0)


def write_results(results: dict[str, Any]) -> list[Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, ensure_ascii=False) + "\n"
    stamp = datetime.fromisoformat(results["date"]).strftime("%Y-%m-%dT%H%M%SZ")
    paths = [RESULTS / "latest.json", RESULTS / f"{stamp}.json", RESULTS / "latest.md"]
    paths[0].write_text(text)
    paths[1].write_text(text)
    paths[2].write_text(markdown(results))
    return paths


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `finally`: children are stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument(
        "--only", choices=sorted(STANDALONE), help="run one section alone; write no file"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    raise_nofile_limit(32768)
    if args.only:
        results = run_only(args.only)
        print(markdown(results))
        print(json.dumps(results["sections"], indent=2))
        return 1 if results["errors"] else 0
    results = run_all()
    paths = write_results(results)
    print(markdown(results))
    print("written: " + ", ".join(str(p.relative_to(_REPO)) for p in paths), file=sys.stderr)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
