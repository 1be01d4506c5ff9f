"""The measured sections. Each takes a running stack and the load generator, returns plain data.

Every gateway figure sits beside its baseline from the same run: the emulator called directly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from bench.stack import LoadDriver, Stack

__all__ = [
    "hold_section",
    "percentile",
    "stats",
    "ttft_section",
    "warmup_section",
]

Json = dict[str, Any]

TTFT_DIRECTIVE: Json = {
    "text": "Hello! This is a short benchmark reply, sent as a few events.",
    "chunks": 8,
    "first_delay_ms": 0,
}
# 64 clients as they are in use: each answer streams at model speed (100 events 20 ms apart,
# 2 s), so the gateway is busy but not saturated and its latency is its own, not a queue.
PACED_DIRECTIVE: Json = {
    "text": "word " * 100,
    "events": 100,
    "chunks": 100,
    "first_delay_ms": 0,
    "delay_ms": 20,
}
# (label, workers, requests per worker per target, warm-up requests per worker, rounds,
# directive). c64 is a closed loop of short answers sent back to back: it saturates the
# machine, so its latency is mostly the queue behind the busiest process (reported).
TTFT_PLANS: tuple[tuple[str, int, int, int, int, Json], ...] = (
    ("c1", 1, 200, 10, 2, TTFT_DIRECTIVE),
    ("c64paced", 64, 4, 1, 2, PACED_DIRECTIVE),
    ("c64", 64, 10, 1, 2, TTFT_DIRECTIVE),
)
HOLD_LEVELS = (250, 500, 1000, 2000)  # 2,000: past the goal, to find the most held
HOLD_GOAL_LEVEL = 1000  # the memory goal is stated at 1,000 streams
HOLD_DIRECTIVE: Json = {
    "text": "word " * 300,
    "events": 300,
    "chunks": 300,
    "first_delay_ms": 0,
    "delay_ms": 1000,
}


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def stats(values: list[float]) -> Json:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "mean": sum(values) / len(values),
        "min": min(values),
        "max": max(values),
    }


def run_stage(
    stack: Stack,
    load: LoadDriver,
    spec: Json,
    timeout_s: float,
    also: Callable[[], dict[str, float]] | None = None,
) -> Json:
    """One load stage: warm up, sample the servers (and `also`'s figures), go, sample again.
    Returns result + deltas."""
    load.send(spec)
    load.expect("ready", timeout_s)
    before = {**stack.sample(), **(also() if also else {})}
    load.send({"cmd": "go"})
    result = load.expect("done", timeout_s)
    after = {**stack.sample(), **(also() if also else {})}
    result["delta"] = {k: after[k] - before[k] for k in before}
    return result


WARMUP_MIN_STAGES = 3  # a fresh gateway can sit on a plateau for two batches before it drops
WARMUP_MAX_STAGES = 8
WARMUP_STABLE = 0.15  # two stages in a row within 15% of each other in gateway CPU per request


def _stage_summary(result: Json) -> Json:
    n = max(result["n"], 1)
    return {
        "requests": result["n"],
        "errors": result["errors"],
        "requests_per_s": result["n"] / result["elapsed_s"] if result["elapsed_s"] else None,
        "gateway_cpu_ms_per_request": result["delta"]["gateway_cpu_s"] * 1e3 / n,
        "emulator_cpu_ms_per_request": result["delta"]["emulator_cpu_s"] * 1e3 / n,
        "ttft_ms": stats(result["ttft_ms"]),
    }


def warmup_section(stack: Stack, load: LoadDriver) -> Json:
    """Bring both servers to a steady state before measuring; record the cold start.

    Batches of 64 x 5 short streams through the gateway until its CPU per request settles
    (a fresh gateway spends several times more per request at first). At least three batches.
    """
    targets = stack.targets()
    spec: Json = {"stage": "requests", "workers": 64, "per_worker": 5, "warmup": 1}
    spec["directive"] = TTFT_DIRECTIVE
    direct = _stage_summary(run_stage(stack, load, {**spec, "target": targets["direct"]}, 120))
    stages: list[Json] = []
    for _ in range(WARMUP_MAX_STAGES):
        result = run_stage(stack, load, {**spec, "target": targets["gateway"]}, 120)
        stages.append(_stage_summary(result))
        if len(stages) >= WARMUP_MIN_STAGES:
            last = stages[-1]["gateway_cpu_ms_per_request"]
            prev = stages[-2]["gateway_cpu_ms_per_request"]
            if prev and abs(last - prev) / prev <= WARMUP_STABLE:
                break
    return {"direct": direct, "gateway_stages": stages, "stable": len(stages) < WARMUP_MAX_STAGES}


def _answer_s(directive: Json) -> float:
    """How long the emulator takes to send an answer of this directive (0: at once)."""
    return float(directive.get("delay_ms", 0)) * int(directive.get("chunks", 1)) / 1000


def _ttft_plan(stack: Stack, load: LoadDriver, plan: tuple[str, int, int, int, int, Json]) -> Json:
    _, workers, per_worker, warmup, rounds, directive = plan
    targets = stack.targets()
    samples: dict[str, list[float]] = {"direct": [], "gateway": []}
    errors: dict[str, list[str]] = {"direct": [], "gateway": []}
    totals = {name: {"n": 0, "s": 0.0, "gw_cpu": 0.0, "em_cpu": 0.0} for name in samples}
    for _ in range(rounds):  # alternate so drift hits both sides alike
        for name in samples:
            spec = {
                "stage": "requests",
                "target": targets[name],
                "workers": workers,
                "per_worker": per_worker // rounds,
                "warmup": warmup,
                "directive": directive,
                "stagger_s": _answer_s(directive) / workers,
            }
            result = run_stage(stack, load, spec, 120)
            samples[name] += result["ttft_ms"]
            errors[name] += result["error_samples"] if result["errors"] else []
            t = totals[name]
            t["n"] += result["n"]
            t["s"] += result["elapsed_s"]
            t["gw_cpu"] += result["delta"]["gateway_cpu_s"]
            t["em_cpu"] += result["delta"]["emulator_cpu_s"]
    direct, gateway = stats(samples["direct"]), stats(samples["gateway"])
    out: Json = {"workers": workers, "direct_ms": direct, "gateway_ms": gateway, "errors": errors}
    # Context for the latencies: throughput, and each server's CPU per request in these runs.
    out["load"] = {
        name: {
            "requests_per_s": t["n"] / t["s"] if t["s"] else None,
            "gateway_cpu_ms_per_request": t["gw_cpu"] * 1e3 / max(t["n"], 1),
            "emulator_cpu_ms_per_request": t["em_cpu"] * 1e3 / max(t["n"], 1),
        }
        for name, t in totals.items()
    }
    if direct["n"] and gateway["n"]:
        out["overhead_p50_ms"] = gateway["p50"] - direct["p50"]
        out["overhead_p99_ms"] = gateway["p99"] - direct["p99"]
    return out


def ttft_section(stack: Stack, load: LoadDriver) -> Json:
    return {plan[0]: _ttft_plan(stack, load, plan) for plan in TTFT_PLANS}


def _wait_drained(stack: Stack, timeout_s: float) -> float | None:
    """Seconds until the emulator has no stream open, or None if it still has after timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if stack.emulator_streams_now() == 0:
            return time.monotonic() - t0
        time.sleep(0.1)
    return None


def hold_level(stack: Stack, load: LoadDriver, name: str, streams: int) -> Json:
    """Open `streams` slow streams to `name`, measure the server's RSS while all are open."""
    spec = {
        "stage": "hold",
        "target": stack.targets()[name],
        "streams": streams,
        "directive": HOLD_DIRECTIVE,
        "warmup_directive": TTFT_DIRECTIVE,
        "warmup": 4,
        "opening": 200,
        "open_timeout_s": 60,
    }
    load.send(spec)
    load.expect("ready", 60)
    before = stack.sample()
    load.send({"cmd": "go"})
    held = load.expect("held", 120)
    time.sleep(1.0)  # let every stream settle into its steady state
    during = stack.sample()
    upstream_open = stack.emulator_streams_now()
    load.send({"cmd": "release"})
    done = load.expect("done", 60)
    server = "gateway" if name == "gateway" else "emulator"
    grown = during[f"{server}_rss_kb"] - before[f"{server}_rss_kb"]
    ok = held["held"] == streams and done["still_open_at_release"] == streams
    return {
        "streams": streams,
        "ok": ok,
        "held": held["held"],
        "still_open_at_release": done["still_open_at_release"],
        "upstream_streams_open": upstream_open,
        "ramp_s": held["ramp_s"],
        "error_samples": held["error_samples"],
        "rss_before_kb": before[f"{server}_rss_kb"],
        "rss_held_kb": during[f"{server}_rss_kb"],
        "kb_per_stream": grown / streams,
        # How long the emulator keeps streaming after the clients went away (None: > 10 s).
        "upstream_drained_s": _wait_drained(stack, 10),
    }


def hold_section(new_stack: Callable[[], Stack], load: LoadDriver) -> Json:
    """For each level, a fresh stack: emulator alone first (baseline), then the gateway."""
    levels: list[Json] = []
    for streams in HOLD_LEVELS:
        stack = new_stack()
        try:
            direct = hold_level(stack, load, "direct", streams)
            gateway = hold_level(stack, load, "gateway", streams) if direct["ok"] else None
        finally:
            stack.stop()
        levels.append({"streams": streams, "direct": direct, "gateway": gateway})
        if gateway is None or not gateway["ok"]:
            break
    return {"levels": levels, **_hold_summary(levels)}


def _hold_summary(levels: list[Json]) -> Json:
    def best(side: str) -> Json | None:
        good = [lv[side] for lv in levels if lv[side] is not None and lv[side]["ok"]]
        return max(good, key=lambda r: r["streams"]) if good else None

    def at_goal(side: str) -> float | None:
        for lv in levels:
            run = lv[side]
            if lv["streams"] == HOLD_GOAL_LEVEL and run is not None and run["ok"]:
                return float(run["kb_per_stream"])
        return None

    gw, em = best("gateway"), best("direct")
    return {
        "max_held": gw["streams"] if gw else 0,
        "kb_per_stream_at_max": gw["kb_per_stream"] if gw else None,
        "baseline_max_held": em["streams"] if em else 0,
        "goal_level": HOLD_GOAL_LEVEL,
        "kb_per_stream": at_goal("gateway"),
        "baseline_kb_per_stream": at_goal("direct"),
    }
