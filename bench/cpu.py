"""The CPU section: gateway CPU per request, beside the emulator called directly (same run).

Every gateway request sends `max_tokens` (MAX_TOKENS, far above what the answers use, so it
never cuts one short; the gateway then counts output tokens as a client's limit requires).
At 100 events: the OpenAI stream and, in the same rounds, the OpenAI non-streaming answer and
the Anthropic `/v1/messages` stream and non-streaming answer, each compared with the OpenAI
stream. At 1,000 events: the OpenAI stream, for the fixed + per-event fit. Rounds alternate
the targets so drift on a shared machine hits all of them alike. Then `bulk`: the OpenAI
stream's two sizes again with the emulator's body re-chunked into 64 KiB pieces, so the fit
splits the per-event work from the per-read I/O (a read, an SSE write, the loop's turn).
`per_read` divides the rest by the gateway's read() calls (and gives their system time), and
at both sizes the same answers also go through a bare relay (`bench/relay.py`: the I/O alone,
the floor under any gateway in Python).
"""

from __future__ import annotations

from typing import Any

from bench.proc import cpu_seconds, io_calls
from bench.relay import start_relay
from bench.sections import run_stage
from bench.stack import LoadDriver, Stack

__all__ = ["MAX_TOKENS", "VARIANTS", "cpu_section"]

Json = dict[str, Any]

MAX_TOKENS = 4096
# (events per stream, requests per target per round)
CPU_SIZES = ((100, 200), (1000, 40))
# The read pattern (how many events each upstream read brings, so how many reads and SSE
# writes an answer costs) varies a lot from one batch of requests to the next on a shared
# machine: four rounds, in alternating orders, for each target's figure.
CPU_ROUNDS = 4
CPU_WORKERS = 4
VARIANT_EVENTS = 100
REFERENCE = "openai_stream"
# (name, gateway API, streamed, title): every one runs at VARIANT_EVENTS, the first at every size
VARIANTS = (
    (REFERENCE, "openai", True, "OpenAI /v1/chat/completions, streamed"),
    ("openai_json", "openai", False, "OpenAI /v1/chat/completions, not streamed"),
    ("anthropic_stream", "anthropic", True, "Anthropic /v1/messages, streamed"),
    ("anthropic_json", "anthropic", False, "Anthropic /v1/messages, not streamed"),
)


def gateway_target(stack: Stack, api: str = "openai", stream: bool = True) -> Json:
    """The gateway as a load target, with the client's `max_tokens` set."""
    return {**stack.targets()["gateway"], "api": api, "stream": stream, "max_tokens": MAX_TOKENS}


def events_directive(events: int, split_bytes: int | None = None) -> Json:
    directive: Json = {"text": "word " * events, "events": events, "chunks": events}
    if split_bytes:
        directive["split_bytes"] = split_bytes  # the emulator re-chunks its body
    return directive


# The same answers sent in 64 KiB pieces: a few upstream reads (and SSE writes) per answer
# instead of one per event or two, which leaves the per-event work alone in the fit.
BULK_SPLIT_BYTES = 65536


def _targets(stack: Stack, events: int, relay_port: int | None) -> dict[str, Json]:
    variants = VARIANTS if events == VARIANT_EVENTS else VARIANTS[:1]
    out = {"direct": stack.targets()["direct"]}
    if relay_port is not None:  # the emulator's answers through the bare relay (bench/relay.py)
        out["relay"] = {**out["direct"], "port": relay_port}
    for name, api, stream, _ in variants:
        out[name] = gateway_target(stack, api, stream)
    return out


def _run(
    stack: Stack,
    load: LoadDriver,
    target: Json,
    events: int,
    requests: int,
    split_bytes: int | None = None,
    relay_pid: int | None = None,
) -> Json:
    streamed = target.get("stream", True)
    spec = {
        "stage": "requests",
        "target": target,
        "workers": CPU_WORKERS,
        "per_worker": requests // CPU_WORKERS,
        "warmup": 2,
        "directive": events_directive(events, split_bytes),
        "expect_events": events if streamed else 1,  # a whole JSON answer counts as one
    }
    also = None if relay_pid is None else (lambda: _relay_sample(relay_pid))
    r = run_stage(stack, load, spec, 300, also)
    return {
        "requests": r["n"],
        "ok": r["ok"],
        "events_mismatched": r["events_mismatched"],
        "error_samples": r["error_samples"],
        "content_events_mean": r["content_events_mean"],
        "elapsed_s": r["elapsed_s"],
        "gateway_cpu_s": r["delta"]["gateway_cpu_s"],
        "gateway_sys_s": r["delta"]["gateway_sys_s"],
        "gateway_reads": r["delta"]["gateway_reads"],
        "gateway_writes": r["delta"]["gateway_writes"],
        "emulator_cpu_s": r["delta"]["emulator_cpu_s"],
        "relay_cpu_s": r["delta"].get("relay_cpu_s", 0.0),
        "relay_reads": r["delta"].get("relay_reads", 0),
    }


def _relay_sample(pid: int) -> dict[str, float]:
    return {"relay_cpu_s": cpu_seconds(pid), "relay_reads": io_calls(pid)[0]}


def _merge(rounds: list[Json]) -> Json:
    ok = sum(r["ok"] for r in rounds)
    n = max(ok, 1)
    return {
        "requests": sum(r["requests"] for r in rounds),
        "ok": ok,
        # every answer complete and with the expected number of content events
        "valid": all(r["ok"] == r["requests"] and not r["events_mismatched"] for r in rounds),
        "error_samples": sorted({e for r in rounds for e in r["error_samples"]})[:5],
        "elapsed_s": sum(r["elapsed_s"] for r in rounds),
        "gateway_cpu_ms_per_request": sum(r["gateway_cpu_s"] for r in rounds) * 1e3 / n,
        "gateway_sys_ms_per_request": sum(r["gateway_sys_s"] for r in rounds) * 1e3 / n,
        "gateway_reads_per_request": sum(r["gateway_reads"] for r in rounds) / n,
        "gateway_writes_per_request": sum(r["gateway_writes"] for r in rounds) / n,
        "emulator_cpu_ms_per_request": sum(r["emulator_cpu_s"] for r in rounds) * 1e3 / n,
        "relay_cpu_ms_per_request": sum(r["relay_cpu_s"] for r in rounds) * 1e3 / n,
        "relay_reads_per_request": sum(r["relay_reads"] for r in rounds) / n,
        "rounds": rounds,
    }


def _size(
    stack: Stack, load: LoadDriver, events: int, requests: int, relay: tuple[int, int] | None
) -> Json:
    """`relay`: the bare relay's (pid, port), whose CPU is measured on its own target."""
    targets = _targets(stack, events, relay[1] if relay else None)
    rounds: dict[str, list[Json]] = {name: [] for name in targets}
    for round_ in range(CPU_ROUNDS):
        # every other round in the reverse order: no target always follows the same one
        order = list(targets.items())
        for name, target in order if round_ % 2 == 0 else reversed(order):
            pid = relay[0] if relay and name == "relay" else None
            rounds[name].append(_run(stack, load, target, events, requests, relay_pid=pid))
    runs = {name: _merge(r) for name, r in rounds.items()}
    gw_ms = runs[REFERENCE]["gateway_cpu_ms_per_request"]
    base_ms = runs["direct"]["emulator_cpu_ms_per_request"]
    relay_run = runs.get("relay")
    return {
        "relay_ms_per_request": relay_run["relay_cpu_ms_per_request"] if relay_run else None,
        "relay_reads_per_request": relay_run["relay_reads_per_request"] if relay_run else None,
        "events": events,
        "runs": runs,
        "gateway_ms_per_request": gw_ms,
        "gateway_us_per_event": gw_ms * 1e3 / events,
        "baseline_emulator_ms_per_request": base_ms,
        "ratio_gateway_to_emulator": gw_ms / base_ms if base_ms else None,
        "valid": runs[REFERENCE]["valid"],
    }


def _variants(plan: Json) -> Json:
    runs, ref = plan["runs"], plan["gateway_ms_per_request"]
    out: Json = {}
    for name, api, stream, title in VARIANTS[1:]:
        run = runs[name]
        ms = run["gateway_cpu_ms_per_request"]
        out[name] = {
            "title": title,
            "api": api,
            "stream": stream,
            "gateway_ms_per_request": ms,
            "reference_ms_per_request": ref,
            "ratio_to_reference": ms / ref if ref else None,
            "valid": run["valid"],
            # how the upstream's answer came, beside the reference's: each read costs (per_read)
            "reads_per_request": run["gateway_reads_per_request"],
            "reference_reads_per_request": runs[REFERENCE]["gateway_reads_per_request"],
        }
    return out


def _fit(ms_by_events: dict[int, float]) -> Json:
    (e1, ms1), (e2, ms2) = sorted(ms_by_events.items())
    per_event_ms = (ms2 - ms1) / (e2 - e1)
    return {"per_event_us": per_event_ms * 1e3, "per_request_ms": ms1 - per_event_ms * e1}


def _bulk(stack: Stack, load: LoadDriver) -> Json:
    """The OpenAI stream's sizes again, the upstream body in BULK_SPLIT_BYTES pieces; and the
    other variants at VARIANT_EVENTS the same way: compared at the same few reads per answer,
    their figures are the work of each API alone (the main rows move with how many reads each
    answer happened to take)."""
    target = gateway_target(stack)
    others = {name: gateway_target(stack, api, stream) for name, api, stream, _ in VARIANTS[1:]}
    rounds: dict[int, list[Json]] = {events: [] for events, _ in CPU_SIZES}
    other_rounds: dict[str, list[Json]] = {name: [] for name in others}
    n_variant = dict(CPU_SIZES)[VARIANT_EVENTS]
    for _ in range(CPU_ROUNDS):
        for events, n in CPU_SIZES:
            rounds[events].append(_run(stack, load, target, events, n, BULK_SPLIT_BYTES))
        for name, other in others.items():
            split = BULK_SPLIT_BYTES
            other_rounds[name].append(_run(stack, load, other, VARIANT_EVENTS, n_variant, split))
    runs = {events: _merge(r) for events, r in rounds.items()}
    ms = {events: run["gateway_cpu_ms_per_request"] for events, run in runs.items()}
    ref = ms[VARIANT_EVENTS]
    variants = {}
    for name, _, _, title in VARIANTS[1:]:
        run = _merge(other_rounds[name])
        v_ms = run["gateway_cpu_ms_per_request"]
        variants[name] = {
            "title": title,
            "gateway_ms_per_request": v_ms,
            "reference_ms_per_request": ref,
            "ratio_to_reference": v_ms / ref if ref else None,
            "valid": run["valid"],
        }
    return {
        "split_bytes": BULK_SPLIT_BYTES,
        "gateway_ms_per_request": {str(e): v for e, v in ms.items()},
        "valid": all(run["valid"] for run in runs.values()),
        "fit": _fit(ms),
        "variants": variants,
    }


def _per_read(plans: Json, bulk: Json) -> Json | None:
    """What an upstream read costs beyond the per-event work, from the OpenAI stream's two
    sizes: the larger answer's extra CPU, less its extra events at the bulk fit's per-event
    cost, over its extra read() calls (each an upstream read, answered by one SSE write); and
    the system time of those reads alone. With the reads per event of the emulator's pace, what
    the kernel alone costs per event."""
    (e1, p1), (e2, p2) = sorted(((int(e), p) for e, p in plans.items()), key=lambda x: x[0])
    r1, r2 = (p["runs"][REFERENCE] for p in (p1, p2))
    reads = {e1: r1["gateway_reads_per_request"], e2: r2["gateway_reads_per_request"]}
    extra_reads = reads[e2] - reads[e1]
    if extra_reads <= 0:  # (no /proc/<pid>/io)
        return None
    extra_ms = p2["gateway_ms_per_request"] - p1["gateway_ms_per_request"]
    work_ms = (e2 - e1) * bulk["fit"]["per_event_us"] / 1e3
    sys_ms = r2["gateway_sys_ms_per_request"] - r1["gateway_sys_ms_per_request"]
    per_read_sys_us = sys_ms * 1e3 / extra_reads
    reads_per_event = extra_reads / (e2 - e1)
    return {
        "reads_per_request": {str(e): v for e, v in reads.items()},
        "writes_per_request": {
            str(e1): r1["gateway_writes_per_request"],
            str(e2): r2["gateway_writes_per_request"],
        },
        "sys_ms_per_request": {
            str(e1): r1["gateway_sys_ms_per_request"],
            str(e2): r2["gateway_sys_ms_per_request"],
        },
        "reads_per_event": reads_per_event,
        "per_read_us": (extra_ms - work_ms) * 1e3 / extra_reads,
        "per_read_sys_us": per_read_sys_us,
        "kernel_us_per_event": per_read_sys_us * reads_per_event,
    }


def cpu_section(stack: Stack, load: LoadDriver) -> Json:
    em_port = int(stack.emulator_url.rsplit(":", 1)[1])
    relay, relay_port = start_relay(em_port, stack.gateway.log_path.parent)
    try:
        plans = {
            str(events): _size(stack, load, events, n, (relay.pid, relay_port))
            for events, n in CPU_SIZES
        }
    finally:
        relay.stop()
    fit = _fit({e: plans[str(e)]["gateway_ms_per_request"] for e, _ in CPU_SIZES})
    bulk = _bulk(stack, load)
    return {
        "max_tokens": MAX_TOKENS,
        "reference": REFERENCE,
        "plans": plans,
        "fit": fit,
        "variants": _variants(plans[str(VARIANT_EVENTS)]),
        "bulk": bulk,
        "per_read": _per_read(plans, bulk),
    }
