"""The markdown report: the goal table, the notes, the profile summary and the previous runs."""

from __future__ import annotations

from typing import Any

from bench.history import history_lines
from bench.report import get

__all__ = ["cell", "markdown", "num"]

Json = dict[str, Any]

PROFILE_TOP = 15


def cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return num(value)
    return str(value)


def num(value: float) -> str:
    size = abs(value)
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if size >= 0.1 else f"{value:.3f}"


def _relation(value: Any) -> str:
    if isinstance(value, float):
        return ("+" if value >= 0 else "") + num(value) + " ms"
    return cell(value)


def markdown(results: Json) -> str:
    m = results["machine"]
    lines = [
        "# Ki2API benchmark",
        "",
        f"Run {results['date']} · {m['cpu_count']} cores ({m['cpu_model']}) · "
        f"Python {m['python']} · git {m['git_commit']} · {results['duration_s']:.0f} s",
        "",
        "Baseline = the emulator called directly, in the same run. "
        "Overhead = gateway − baseline; ratio = gateway ÷ baseline.",
        "",
        "| metric | measured (gateway) | baseline (emulator direct) | overhead / ratio "
        "| goal | met? |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["goals"]:
        cells = [row["metric"], cell(row["measured"]), cell(row["baseline"])]
        cells += [_relation(row["relation"]), row["goal"], cell(row["met"])]
        lines.append("| " + " | ".join(cells) + " |")
    notes = _notes(results)
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    for name, err in results.get("errors", {}).items():
        lines += ["", f"**Section `{name}` failed:** `{str(err)[:300]}`"]
    lines += profile_lines(get(results, "sections", "profile"))
    lines += ["", "Raw figures: `latest.json`. How to read them: `bench/README.md`."]
    lines += history_lines()
    return "\n".join(lines) + "\n"


_QUEUEING = (
    " A closed loop of that many clients on this machine mostly measures queueing behind "
    "the gateway's CPU per request."
)


def _notes(results: Json) -> list[str]:
    """Observations a reader needs to interpret the table."""
    sections, m = results.get("sections", {}), results["machine"]
    notes = [
        f"Load average at start / end: {m['loadavg_at_start'][0]:.2f} / "
        f"{m.get('loadavg_at_end', [float('nan')])[0]:.2f} on {m['cpu_count']} cores "
        "(other work on the machine adds noise to the latencies; CPU times are per process)."
    ]
    stages = get(sections, "warmup", "gateway_stages") or []
    if len(stages) >= 2:
        cpu = ", ".join(f"{st['gateway_cpu_ms_per_request']:.1f}" for st in stages)
        notes.append(
            f"Warm-up (not measured below): batches of 64 x 5 short streams through a fresh "
            f"gateway cost {cpu} ms of gateway CPU per request, batch after batch; the sections "
            "below start once two batches agree within 15% (at least three batches)."
        )
    for label, plan in (get(sections, "ttft") or {}).items():
        load = plan.get("load", {})
        gw, em = load.get("gateway"), load.get("direct")
        if gw and em and gw["requests_per_s"] and em["requests_per_s"]:
            notes.append(
                f"TTFT {label}: {em['requests_per_s']:.0f} req/s direct, "
                f"{gw['requests_per_s']:.0f} req/s through the gateway "
                f"(gateway CPU {gw['gateway_cpu_ms_per_request']:.2f} ms per request, the "
                f"emulator's {em['emulator_cpu_ms_per_request']:.2f} ms when called directly)."
                + (_QUEUEING if label == "c64" else "")
            )
    notes += _cpu_notes(get(sections, "cpu"))
    notes += _workers_notes(get(sections, "workers"))
    notes += _faults_notes(get(sections, "faults"))
    notes += _store_notes(get(sections, "store"))
    for level in get(sections, "hold", "levels") or []:
        gw = level.get("gateway")
        if gw and gw.get("ok") and gw.get("upstream_drained_s") is None:
            notes.append(
                f"After {gw['streams']} clients dropped their streams, the emulator still had "
                "upstream streams open 10 s later: the gateway did not cancel the upstream "
                "calls on client disconnect."
            )
            break
    return notes


def _faults_notes(faults: Json | None) -> list[str]:
    if not faults:
        return []
    parts = []
    for stage in faults["stages"].values():
        failed = ", ".join(f"{n} x {s}" for s, n in stage["failures_by_status"].items())
        upstream = stage["upstream_fault_rate"]
        parts.append(
            f"at {stage['fault_rate_set']:.0%}: {stage['requests']} requests, "
            f"{stage['requests_per_s']:.0f} req/s, upstream "
            f"{stage['upstream_faults']}/{stage['upstream_calls']} calls failed "
            f"({(upstream or 0):.1%}), failures by status {{{failed or 'none'}}}, "
            f"{stage['broken_contracts']} broken contracts"
        )
    return [
        f"Faults: {faults['accounts']} accounts, {faults['clients']} clients back to back for "
        f"{faults['stage_s']:.0f} s per rate, a fresh gateway (empty store) per rate; "
        + "; ".join(parts)
        + ". Status 0 = no HTTP answer; 200 = a stream cut by a fault after its first content."
    ]


_MICRO = (
    ("changed", "changed()"),
    ("slot_lease", "a slot lease taken and freed"),
    ("admission", "a client key admitted"),
    ("usage_batch_of_100", "100 usage rows written at once"),
)


def _store_notes(store: Json | None) -> list[str]:
    if not store:
        return []
    micro = store.get("micro", {})
    parts = []
    for name, title in _MICRO:
        redis, sqlite = get(micro, "redis", name), get(micro, "sqlite", name)
        if redis and sqlite:
            parts.append(
                f"{title}: Redis {redis['wall_us']:.0f} µs ({redis['cpu_us']:.0f} µs of CPU), "
                f"SQLite {sqlite['wall_us']:.0f} µs ({sqlite['cpu_us']:.0f} µs of CPU)"
            )
    plan = store.get("load_plan", {})
    return [
        f"Store: both gateways up at once, {plan.get('rounds')} alternating rounds of "
        f"{plan.get('workers', 0) * plan.get('per_worker', 0)} requests each "
        f"({store['sqlite']['requests_per_s']:.0f} req/s on SQLite, "
        f"{store['redis']['requests_per_s']:.0f} on Redis); Redis costs "
        f"{store['redis_extra_ms_per_request']:+.2f} ms of gateway CPU per request. The store "
        "calls alone, per call, from one client (wall time; CPU of the calling process): "
        + "; ".join(parts)
        + "."
    ]


def _cpu_notes(cpu: Json | None) -> list[str]:
    if not cpu:
        return []
    bad = []
    for events, plan in cpu.get("plans", {}).items():
        for name, run in plan.get("runs", {}).items():
            if not run.get("valid", True):
                errors = "; ".join(run["error_samples"]) or "wrong number of content events"
                bad.append(
                    f"{name} at {events} events: {run['ok']}/{run['requests']} ok ({errors})"
                )
    notes = [
        f"CPU: every gateway request sends max_tokens {cpu.get('max_tokens')}; 4 clients; "
        "rounds alternate the targets. Each answer is checked whole (a stream must end properly "
        "with every content event; a non-streaming answer must hold all of the text)."
    ]
    if bad:
        notes.append("CPU section answers that failed the check: " + "; ".join(bad) + ".")
    return notes


def _workers_notes(workers: Json | None) -> list[str]:
    if not workers:
        return []
    sides = workers["sides"]
    parts = [
        f"{name}: {side['processes']} processes, {side['requests']} requests, "
        f"{side['errors']} errors"
        for name, side in sides.items()
    ]
    return [
        "Workers: one emulator, a 1-worker gateway (w1) and a `--workers 2` gateway (w2) "
        "warmed up alike, then alternating rounds of the concurrency-64 TTFT load; CPU and RSS "
        "summed over each gateway's process tree; " + "; ".join(parts) + "."
    ]


def profile_lines(profile: Json | None) -> list[str]:
    """The profile summary: where the gateway's CPU went, by package and by function."""
    if not profile:
        return []
    lines = ["", "## Profile (py-spy, self time)", ""]
    plan = profile.get("plan", {})
    if "skipped" in profile:
        return lines + [f"Not measured: {profile['skipped']}"]
    run = profile.get("run", {})
    lines.append(
        f"The gateway under py-spy at {plan.get('rate_hz')} Hz while serving "
        f"{plan.get('requests')} streamed {plan.get('events')}-event OpenAI answers with "
        f"max_tokens, {plan.get('clients')} clients (after {plan.get('warmup_requests')} "
        f"warm-up requests, sampled too): {profile['samples']} samples "
        f"({num(profile.get('sampled_s') or 0.0)} s; the measured load took "
        f"{num(run.get('gateway_cpu_s') or 0.0)} s of gateway CPU: many more sampled seconds "
        "mean the gateway waited for a core), "
        f"{run.get('ok')}/{run.get('requests')} answers complete, "
        f"{num(run.get('gateway_cpu_ms_per_request') or 0.0)} ms of gateway CPU per answer "
        f"under the profiler. {profile['startup_samples_excluded']} samples in imports "
        "(start-up) left out. Time in C code (orjson, uvloop, the GC) counts in the Python "
        "function that called it; uvloop's own loop shows as `Runner.run`."
    )
    packages = ", ".join(f"{name} {pct:.1f}%" for name, pct in profile["packages"].items())
    lines += ["", f"By package: {packages}.", ""]
    lines += ["| # | function | file | self % | total % |", "|---|---|---|---|---|"]
    for i, f in enumerate(profile["top_self"][:PROFILE_TOP], 1):
        shares = f"{f['self_pct']:.1f} | {f['total_pct']:.1f}"
        lines.append(f"| {i} | `{f['function']}` | {f['file']} | {shares} |")
    return lines
