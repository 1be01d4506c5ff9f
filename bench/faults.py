"""Section `faults`: how many client requests succeed while the upstream fails at random (issue 9).

An emulator with three accounts, each failing a share R of its chat calls with one fault picked
at random from issue 9's soak list (throttled, server_error, unavailable, high_load,
empty_stream, truncate, drop_connection), and 20 clients sending requests back to back (no
client back-off) for `STAGE_S` seconds, half OpenAI and half Anthropic, half streaming. Every
request is judged by `tests.support.procs.chat`: a complete answer, or not. The clients run in
this driver process (`tests.support.faultload.drive`), never in the gateway's.

Per rate (5%, 10%, 30%): requests, requests/s, the client success rate, failures by status, and
the upstream fault rate the emulator measured over the stage (sum of `faults` / sum of
`chat_requests` of the three accounts in `/_emulator/stats`). The baseline is what a client would
see with no failover at all: 1 - the upstream fault rate.

Each rate gets a fresh gateway with a fresh data directory (state store), so the rests the pool
learned at one rate never carry over into the next. The emulator stays; setting `fault_seed`
restarts each account's fault sequence. About 40 s.
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.faultload import SOAK_FAULTS, FaultRun, drive

from bench.proc import Child, free_port, wait_http
from bench.stack import _REPO, HOST, _child_env, _wait_file, start_gateway

__all__ = ["ACCOUNTS", "CLIENTS", "RATES", "faults_section"]

Json = dict[str, Any]
RATES = (0.05, 0.10, 0.30)
ACCOUNTS = 3
CLIENTS = 20
STAGE_S = 10.0
GOAL_RATE = 0.10
GOAL_SUCCESS = 0.995
API_KEY = "ki2api-bench-faults-key"
_PY = sys.executable
_EMU_IDS = tuple(f"acct-{k}" for k in range(1, ACCOUNTS + 1))


def _http_json(url: str, method: str = "GET", body: Json | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:  # loopback only
        return json.loads(resp.read())


def _start_emulator(root: Path, logs: Path) -> tuple[Child, str, Path]:
    port = free_port()
    creds = root / "creds"
    argv = [_PY, "-m", "ki2api.cli.main", "emulator", "--host", HOST, "--port", str(port)]
    argv += ["--accounts", str(ACCOUNTS), "--credentials-dir", str(creds)]
    child = Child("faults-emulator", argv, log_dir=logs, env=_child_env(root, {}), cwd=_REPO)
    url = f"http://{HOST}:{port}"
    try:
        wait_http(url + "/_emulator/stats", 30, child)
        for emu_id in _EMU_IDS:
            _wait_file(creds / emu_id / "kiro-auth-token.json", child, 10)
    except BaseException:
        child.stop()
        raise
    return child, url, creds


def _start_gateway(
    root: Path, logs: Path, emulator_url: str, creds: Path, n: int
) -> tuple[Child, str]:
    """A fresh gateway (its own data directory: an empty state store) over the three logins."""
    login = {
        "API_KEY": API_KEY,
        "KIRO_CREDS_DIR": str(creds),
        "KI2API_DATA_DIR": str(root / f"data-{n}"),
        "KI2API_QUOTA_POLL_S": "0",
        "KI2API_ACCOUNT_MAX_INFLIGHT": "0",  # failover under faults, not the cap's queue
    }
    return start_gateway(root, logs, emulator_url, login, name=f"faults-gateway-{n}")


def _set_fault_rate(emulator_url: str, rate: float, seed: int) -> None:
    for n, emu_id in enumerate(_EMU_IDS):
        behaviour = {
            "fault_rate": rate,
            "faults": list(SOAK_FAULTS),
            "fault_seed": seed + n,
            "usage_limit": 1_000_000,  # a paid plan: never looks spent
        }
        url = f"{emulator_url}/_emulator/accounts/{emu_id}"
        _http_json(url, "PATCH", {"behaviour": behaviour})


def _upstream(emulator_url: str) -> tuple[int, int]:
    """(chat calls, faults) the emulator counted so far over the three accounts."""
    accounts = _http_json(emulator_url + "/_emulator/stats")["accounts"]
    stats = [accounts[a] for a in _EMU_IDS]
    return sum(s["chat_requests"] for s in stats), sum(s["faults"] for s in stats)


def _stage_figures(rate: float, run: FaultRun, calls: int, faults: int) -> Json:
    upstream_rate = faults / calls if calls else None
    problems = run.problems()
    return {
        "fault_rate_set": rate,
        "requests": run.total,
        "ok": run.ok,
        "success_rate": run.success_rate,
        "elapsed_s": run.elapsed_s,
        "requests_per_s": run.total / run.elapsed_s if run.elapsed_s else None,
        "failures_by_status": {str(k): v for k, v in sorted(run.statuses().items())},
        "upstream_calls": calls,
        "upstream_faults": faults,
        "upstream_fault_rate": upstream_rate,
        "baseline_success_rate": None if upstream_rate is None else 1 - upstream_rate,
        "calls_per_request": calls / run.total if run.total else None,
        "broken_contracts": len(problems),  # a 500, a bad error body, a false finish
        "broken_examples": problems[:3],
    }


def _stage(root: Path, logs: Path, emulator_url: str, creds: Path, n: int, rate: float) -> Json:
    _set_fault_rate(emulator_url, rate, seed=9000 + 10 * n)
    gateway, url = _start_gateway(root, logs, emulator_url, creds, n)
    try:
        calls0, faults0 = _upstream(emulator_url)
        run = asyncio.run(
            drive(url, API_KEY, clients=CLIENTS, duration_s=STAGE_S, timeout_s=30, label="bench")
        )
        calls, faults = _upstream(emulator_url)
    finally:
        gateway.stop()
    return _stage_figures(rate, run, calls - calls0, faults - faults0)


def faults_section(root: Path, logs: Path) -> Json:
    root.mkdir(parents=True, exist_ok=True)
    emulator, emulator_url, creds = _start_emulator(root, logs)
    try:
        stages = [
            _stage(root, logs, emulator_url, creds, n, rate) for n, rate in enumerate(RATES, 1)
        ]
    finally:
        emulator.stop()
    return {
        "accounts": ACCOUNTS,
        "clients": CLIENTS,
        "stage_s": STAGE_S,
        "faults": list(SOAK_FAULTS),
        "goal": {"fault_rate": GOAL_RATE, "success_rate": GOAL_SUCCESS},
        "stages": {f"{rate:.2f}": stage for rate, stage in zip(RATES, stages, strict=True)},
    }
