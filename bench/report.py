"""Turn the raw results into the goal table (JSON rows and markdown)."""

from __future__ import annotations

from typing import Any

__all__ = ["goal_rows", "markdown"]

Json = dict[str, Any]
Row = dict[str, Any]


def _get(data: Json, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _row(metric: str, measured: Any, baseline: Any, relation: Any, goal: str, met: Any) -> Row:
    return {
        "metric": metric,
        "measured": measured,
        "baseline": baseline,
        "relation": relation,
        "goal": goal,
        "met": met,
    }


def _ttft_rows(ttft: Json | None) -> list[Row]:
    rows: list[Row] = []
    for label, title in (("c1", "concurrency 1"), ("c64", "concurrency 64")):
        plan = _get(ttft or {}, label) or {}
        for q in ("p50", "p99"):
            over = plan.get(f"overhead_{q}_ms")
            goal, met = ("overhead < 2 ms", over < 2.0 if over is not None else None)
            if q == "p99":
                goal, met = "(reported)", None
            rows.append(
                _row(
                    f"TTFT {q}, {title} (ms)",
                    _get(plan, "gateway_ms", q),
                    _get(plan, "direct_ms", q),
                    over,
                    goal,
                    met,
                )
            )
    return rows


def _cpu_rows(cpu: Json | None) -> list[Row]:
    rows: list[Row] = []
    for events, plan in sorted((_get(cpu or {}, "plans") or {}).items(), key=lambda x: int(x[0])):
        ms = plan["gateway_ms_per_request"]
        rows.append(
            _row(
                f"gateway CPU per request, {events} events (ms)",
                ms,
                plan["baseline_emulator_ms_per_request"],
                _ratio(plan["ratio_gateway_to_emulator"]),
                f"< {plan['goal_ms']:g} ms",
                ms < plan["goal_ms"],
            )
        )
        per_event = ms * 1e3 / int(events)
        title = f"gateway CPU per event, {events}-event stream (µs)"
        rows.append(_row(title, per_event, None, None, "(reported)", None))
    fit = _get(cpu or {}, "fit")
    if fit:
        per_event, per_request = fit["per_event_us"], fit["per_request_ms"]
        title = "gateway CPU, marginal per event (µs, fit of the two sizes)"
        rows.append(_row(title, per_event, None, None, "< 10 µs", per_event < 10))
        title = "gateway CPU, fixed per request (ms, fit of the two sizes)"
        rows.append(_row(title, per_request, None, None, "< 1 ms", per_request < 1))
    return rows


def _hold_rows(hold: Json | None) -> list[Row]:
    if not hold:
        return []
    gw_kb, em_kb = hold.get("kb_per_stream"), hold.get("baseline_kb_per_stream")
    levels = "/".join(str(lv["streams"]) for lv in hold.get("levels", []))
    return [
        _row(
            f"concurrent slow streams held (highest level passed of {levels})",
            hold.get("max_held"),
            hold.get("baseline_max_held"),
            None,
            ">= 1000",
            (hold.get("max_held") or 0) >= 1000,
        ),
        _row(
            f"gateway memory per held stream at {hold.get('goal_level')} streams (KB)",
            gw_kb,
            em_kb,
            _ratio(gw_kb / em_kb) if gw_kb is not None and em_kb else None,
            "< 60 KB",
            gw_kb < 60 if gw_kb is not None else None,
        ),
    ]


def _decoder_rows(dec: Json | None) -> list[Row]:
    if not dec:
        return []
    return [
        _row(
            "decoder throughput, ours vs botocore (MB/s)",
            dec["ours_mb_s"],
            dec["botocore_mb_s"],
            _ratio(dec["ratio"]),
            ">= 5x botocore",
            dec["ratio"] >= 5,
        )
    ]


def _loop_rows(loop: Json | None) -> list[Row]:
    if not loop:
        return []
    alone, hostile = loop["alone"], loop["with_hostile"]
    return [
        _row(
            f"max inter-chunk gap of a stream (chunks every {loop['delay_ms']} ms) while "
            "hostile requests run; baseline: the stream alone (ms)",
            hostile["max_ms"],
            alone["max_ms"],
            loop["max_gap_difference_ms"],
            "< 100 ms",
            hostile["max_ms"] < 100,
        ),
        _row(
            "p99 inter-chunk gap, same streams (ms)",
            hostile["p99_ms"],
            alone["p99_ms"],
            hostile["p99_ms"] - alone["p99_ms"],
            "–",
            None,
        ),
    ]


def _faults_rows(faults: Json | None) -> list[Row]:
    if not faults:
        return []
    rows: list[Row] = []
    goal_rate, goal_success = faults["goal"]["fault_rate"], faults["goal"]["success_rate"]
    for stage in faults["stages"].values():
        rate, success = stage["fault_rate_set"], stage["success_rate"]
        upstream, baseline = stage["upstream_fault_rate"], stage["baseline_success_rate"]
        is_goal = abs(rate - goal_rate) < 1e-9
        rows.append(
            _row(
                f"client success rate, {faults['clients']} clients, upstream faults at "
                f"{rate:.0%} (measured {(upstream or 0):.1%}); baseline: 1 − the measured "
                "upstream fault rate (%)",
                f"{success * 100:.2f}",  # 99.96 must not print as 100.0
                None if baseline is None else f"{baseline * 100:.2f}",
                None if baseline is None else f"{(success - baseline) * 100:+.1f} pp",
                f">= {goal_success:.1%}" if is_goal else "(reported)",
                success >= goal_success if is_goal else None,
            )
        )
    return rows


def _store_rows(store: Json | None) -> list[Row]:
    if not store:
        return []
    sqlite, redis = store["sqlite"], store["redis"]
    events = _get(store, "load_plan", "events")
    return [
        _row(
            f"gateway CPU per request on the Redis store, {events}-event streams through a "
            "client key; baseline: the same load on the SQLite store, same run (ms)",
            redis["gateway_cpu_ms_per_request"],
            sqlite["gateway_cpu_ms_per_request"],
            _ratio(store["ratio_redis_to_sqlite"]),
            "(reported)",
            None,
        ),
        _row(
            "redis-server CPU per request, same load (ms)",
            redis["redis_server_cpu_ms_per_request"],
            None,
            None,
            "(reported)",
            None,
        ),
    ]


def _ratio(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}x"


def goal_rows(results: Json) -> list[Row]:
    sections = results.get("sections", {})
    return (
        _ttft_rows(sections.get("ttft"))
        + _cpu_rows(sections.get("cpu"))
        + _hold_rows(sections.get("hold"))
        + _loop_rows(sections.get("loop"))
        + _faults_rows(sections.get("faults"))
        + _store_rows(sections.get("store"))
        + _decoder_rows(sections.get("decoder"))
    )


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return _num(value)
    return str(value)


def _num(value: float) -> str:
    size = abs(value)
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if size >= 0.1 else f"{value:.3f}"


def _relation(value: Any) -> str:
    if isinstance(value, float):
        return ("+" if value >= 0 else "") + _num(value) + " ms"
    return _cell(value)


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
        cells = [row["metric"], _cell(row["measured"]), _cell(row["baseline"])]
        cells += [_relation(row["relation"]), row["goal"], _cell(row["met"])]
        lines.append("| " + " | ".join(cells) + " |")
    notes = _notes(results)
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    for name, err in results.get("errors", {}).items():
        lines += ["", f"**Section `{name}` failed:** `{str(err)[:300]}`"]
    lines += ["", "Raw figures: `latest.json`. How to read them: `bench/README.md`.", ""]
    return "\n".join(lines)


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
    stages = _get(sections, "warmup", "gateway_stages") or []
    if len(stages) >= 2:
        cpu = ", ".join(f"{st['gateway_cpu_ms_per_request']:.1f}" for st in stages)
        notes.append(
            f"Warm-up (not measured below): batches of 64 x 5 short streams through a fresh "
            f"gateway cost {cpu} ms of gateway CPU per request, batch after batch; the sections "
            "below start once two batches agree within 15% (at least three batches)."
        )
    for label, plan in (_get(sections, "ttft") or {}).items():
        load = plan.get("load", {})
        gw, em = load.get("gateway"), load.get("direct")
        if gw and em and gw["requests_per_s"] and em["requests_per_s"]:
            notes.append(
                f"TTFT {label}: {em['requests_per_s']:.0f} req/s direct, "
                f"{gw['requests_per_s']:.0f} req/s through the gateway "
                f"(gateway CPU {gw['gateway_cpu_ms_per_request']:.2f} ms per request)."
                + (_QUEUEING if plan.get("workers", 1) > 1 else "")
            )
    notes += _faults_notes(_get(sections, "faults"))
    notes += _store_notes(_get(sections, "store"))
    for level in _get(sections, "hold", "levels") or []:
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
        redis, sqlite = _get(micro, "redis", name), _get(micro, "sqlite", name)
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
