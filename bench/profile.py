"""The profile section: where the gateway's CPU goes, by function (self time) and by package.

A dedicated emulator and gateway; the gateway runs as py-spy's child (`py-spy record --format
raw --rate 500 --nonblocking -o FILE -- python -m ki2api.cli.main serve ...`), so no ptrace
permission beyond tracing one's own child is needed. The load: the CPU section's 100-event
OpenAI stream with `max_tokens`, 8 clients. The gateway is then stopped (SIGTERM to it alone):
py-spy sees it exit and writes the collapsed stacks ("frame;frame;... count"), whose last frame
is where the sample was taken, i.e. the self time. Samples inside the import machinery
(`_find_and_load`: start-up and first-use imports) are left out and counted apart.

py-spy sees Python frames only: time in C (orjson, pydantic-core, uvloop's loop, the cyclic GC)
is charged to the Python function that called into it. When py-spy is missing or fails, the
section says why and the bench goes on.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.cpu import events_directive, gateway_target
from bench.sections import run_stage
from bench.stack import LoadDriver, start_stack

__all__ = ["package_of", "profile_section", "summarize_raw"]

Json = dict[str, Any]

RATE_HZ = 500
EVENTS = 100
WORKERS = 8
WARMUP_PER_WORKER = 40
PER_WORKER = 250
TOP = 25
STARTUP_MARK = "_find_and_load"
# (group, path prefixes of the sampled frame's file); ki2api is split by subpackage apart
GROUPS = (
    ("aiohttp", ("aiohttp/", "yarl/", "multidict/", "aiohappyeyeballs/", "frozenlist/")),
    ("uvicorn", ("uvicorn/", "h11/", "httptools/")),
    ("asyncio/uvloop", ("asyncio/", "uvloop/", "selectors.py")),
    ("starlette/fastapi/anyio", ("starlette/", "fastapi/", "anyio/", "sniffio/")),
    ("kiro_emulator", ("kiro_emulator/",)),
    ("orjson", ("orjson/",)),
    ("pydantic", ("pydantic/", "pydantic_core/")),
)
OTHER = "gc/other"


def py_spy() -> str | None:
    """The py-spy of this venv (the dev extra), else one on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.is_file() else shutil.which("py-spy")


def _split(frame: str) -> tuple[str, str]:
    """`function (file:line)` -> (function, file)."""
    name, _, where = frame.rpartition(" (")
    if not name:
        return frame, ""
    if "__create_fn__" in name:  # the __init__ (etc.) that @dataclass generates
        name = "(dataclass) " + name.rpartition(".")[2]
    return name, where.rstrip(")").rpartition(":")[0]


def package_of(path: str) -> str:
    if path.startswith("ki2api/"):
        sub = path.split("/")[1]
        return "ki2api." + sub.removesuffix(".py")
    for group, prefixes in GROUPS:
        if path.startswith(prefixes):
            return group
    return OTHER


def _share(count: int, total: int) -> float:
    return round(100 * count / total, 2) if total else 0.0


def summarize_raw(text: str, top: int = TOP) -> Json:
    """Self time by function and by package from py-spy's raw (collapsed) output."""
    leaves: Counter[tuple[str, str]] = Counter()
    inclusive: Counter[tuple[str, str]] = Counter()
    startup = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count, frames = int(count_text), stack.split(";")
        if any(STARTUP_MARK in frame for frame in frames):
            startup += count
            continue
        leaves[_split(frames[-1])] += count
        for key in {_split(frame) for frame in frames}:
            inclusive[key] += count
    total = sum(leaves.values())
    packages: Counter[str] = Counter()
    for (_, path), count in leaves.items():
        packages[package_of(path)] += count
    return {
        "samples": total,
        "startup_samples_excluded": startup,
        "top_self": [
            {
                "function": name,
                "file": path,
                "package": package_of(path),
                "self_pct": _share(count, total),
                "total_pct": _share(inclusive[(name, path)], total),
            }
            for (name, path), count in leaves.most_common(top)
        ],
        "packages": {name: _share(count, total) for name, count in packages.most_common()},
    }


def _stop_profiled(stack: Any, timeout_s: float = 30) -> None:
    """SIGTERM the gateway alone; py-spy sees it exit and writes its file."""
    os.kill(stack.gateway_pid, signal.SIGTERM)
    try:
        stack.gateway.proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        pass  # stack.stop() below ends both


def _profiled_load(root: Path, logs: Path, load: LoadDriver, exe: str, out: Path) -> Json:
    wrap = [exe, "record", "--format", "raw", "--rate", str(RATE_HZ), "--nonblocking"]
    wrap += ["-o", str(out), "--"]
    stack = start_stack(root, logs, name="profiled-gateway", wrap=wrap)
    try:
        spec = {
            "stage": "requests",
            "target": gateway_target(stack),
            "workers": WORKERS,
            "per_worker": PER_WORKER,
            "warmup": WARMUP_PER_WORKER,
            "directive": events_directive(EVENTS),
            "expect_events": EVENTS,
        }
        r = run_stage(stack, load, spec, 600)
        _stop_profiled(stack)
    finally:
        stack.stop()
    n = max(r["ok"], 1)
    return {
        "requests": r["n"],
        "ok": r["ok"],
        "error_samples": r["error_samples"],
        "requests_per_s": r["n"] / r["elapsed_s"] if r["elapsed_s"] else None,
        "gateway_cpu_ms_per_request": r["delta"]["gateway_cpu_s"] * 1e3 / n,
        "gateway_cpu_s": r["delta"]["gateway_cpu_s"],  # the measured load, not the warm-up
        "py_spy_exit": stack.gateway.poll(),
    }


def profile_section(root: Path, logs: Path, load: LoadDriver) -> Json:
    plan: Json = {
        "events": EVENTS,
        "clients": WORKERS,
        "requests": WORKERS * PER_WORKER,
        "warmup_requests": WORKERS * WARMUP_PER_WORKER,
        "rate_hz": RATE_HZ,
    }
    exe = py_spy()
    if exe is None:
        return {"plan": plan, "skipped": "py-spy not found (install the dev extra)"}
    root.mkdir(parents=True, exist_ok=True)
    out = root / "profile.raw"
    try:
        run = _profiled_load(root, logs, load, exe, out)
    except Exception as exc:  # a profiler that cannot run must not stop the bench
        return {"plan": plan, "skipped": f"{type(exc).__name__}: {str(exc)[:300]}"}
    if not out.is_file():
        tail = (logs / "profiled-gateway.log").read_text(errors="replace")[-500:]
        return {"plan": plan, "run": run, "skipped": f"py-spy wrote no profile: {tail}"}
    summary = summarize_raw(out.read_text())
    # Samples are taken while the gateway's thread is runnable, running or not: far more sampled
    # seconds than CPU seconds mean it waited for a core (a busy machine).
    summary["sampled_s"] = summary["samples"] / RATE_HZ
    return {"plan": plan, "run": run, **summary}
