"""The workers section: `ki2api serve --workers 2` against one worker, same load, same run.

One emulator and two gateways over it (each its own data directory): one plain, one with
`--workers 2` (ready once both workers answer /health). Both are warmed up alike, then rounds
alternate between them with the TTFT section's concurrency-64 load (64 connections, short
8-event streams). Per gateway: requests/s, TTFT p50 and p99, CPU per request summed over the
whole process tree (the supervisor and its workers, from /proc), and the RSS of that tree after
the load. Figures, not a goal: on a 2-core machine the emulator, the client and the gateway
share the cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.proc import Child, tree_cpu_seconds, tree_pids, tree_rss_kb
from bench.sections import TTFT_DIRECTIVE, stats
from bench.stack import LoadDriver, stack_login, start_gateway, start_stack

__all__ = ["workers_section"]

Json = dict[str, Any]

CLIENTS = 64
PER_CLIENT = 5  # per round
ROUNDS = 3
WARMUP_BATCHES = 3  # of 64 x 5 short streams each, per gateway


def _stage(load: LoadDriver, target: Json, pid: int, per_client: int, warmup: int) -> Json:
    load.send(
        {
            "stage": "requests",
            "target": target,
            "workers": CLIENTS,
            "per_worker": per_client,
            "warmup": warmup,
            "directive": TTFT_DIRECTIVE,
        }
    )
    load.expect("ready", 120)
    cpu0 = tree_cpu_seconds(pid)
    load.send({"cmd": "go"})
    result = load.expect("done", 300)
    result["tree_cpu_s"] = tree_cpu_seconds(pid) - cpu0
    return result


def _side_summary(rounds: list[Json], pid: int) -> Json:
    n = sum(r["n"] for r in rounds)
    ok = max(sum(r["ok"] for r in rounds), 1)
    elapsed = sum(r["elapsed_s"] for r in rounds)
    ttft = stats([t for r in rounds for t in r["ttft_ms"]])
    return {
        "requests": n,
        "errors": sum(r["errors"] for r in rounds),
        "error_samples": sorted({e for r in rounds for e in r["error_samples"]})[:5],
        "requests_per_s": n / elapsed if elapsed else None,
        "ttft_ms": ttft,
        "tree_cpu_ms_per_request": sum(r["tree_cpu_s"] for r in rounds) * 1e3 / ok,
        "tree_rss_kb": tree_rss_kb(pid),
        "processes": len(tree_pids(pid)),
    }


def _measure(load: LoadDriver, gateways: dict[str, tuple[Child, Json]]) -> Json:
    for _ in range(WARMUP_BATCHES):
        for child, target in gateways.values():
            _stage(load, target, child.pid, 5, 1)
    rounds: dict[str, list[Json]] = {name: [] for name in gateways}
    for _ in range(ROUNDS):  # alternate so drift hits both alike
        for name, (child, target) in gateways.items():
            rounds[name].append(_stage(load, target, child.pid, PER_CLIENT, 1))
    return {name: _side_summary(rounds[name], gateways[name][0].pid) for name in gateways}


def workers_section(root: Path, logs: Path, load: LoadDriver) -> Json:
    stack = start_stack(root / "w1", logs, name="gateway-w1")
    extra: list[Child] = []
    try:
        token_file = root / "w1" / "creds" / "acct-1" / "kiro-auth-token.json"
        (root / "w2").mkdir(parents=True, exist_ok=True)
        w2, w2_url = start_gateway(
            root / "w2",
            logs,
            stack.emulator_url,
            stack_login(token_file),
            name="gateway-w2",
            workers=2,
        )
        extra.append(w2)
        target = stack.targets()["gateway"]
        gateways = {
            "w1": (stack.gateway, target),
            "w2": (w2, {**target, "port": int(w2_url.rsplit(":", 1)[1])}),
        }
        sides = _measure(load, gateways)
    finally:
        for child in extra:
            child.stop()
        stack.stop()
    one, two = sides["w1"], sides["w2"]
    return {
        "plan": {"clients": CLIENTS, "requests_per_round": CLIENTS * PER_CLIENT, "rounds": ROUNDS},
        "sides": sides,
        "throughput_ratio": (two["requests_per_s"] / one["requests_per_s"])
        if one["requests_per_s"] and two["requests_per_s"]
        else None,
    }
