"""The `store` section: what the Redis store costs per request against SQLite, side by side.

Its own processes: Debian's `redis-server` (a free port, no persistence, stopped at the end), and
two stacks (an emulator and a gateway each), one with `KI2API_STORE=sqlite:PATH`, one with
`KI2API_STORE=redis://…`, both up at once. Each store holds a client key (no limits but a very
high rpm, so every request is admitted and its tokens charged, as for a team's key) and the load
uses it. After warming both gateways, rounds of short streamed chats (the TTFT reply: 8 events)
alternate between the two, so drift hits both alike; per store: gateway CPU per request, and for
Redis the redis-server's CPU per request too. Then the store calls alone, in this process, on
both stores: `changed()`, a slot lease taken and freed, a client key's admission, a usage row
written (in batches of 100): wall time per call, and this process's CPU per call.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.proc import Child, cpu_seconds, free_port
from bench.sections import TTFT_DIRECTIVE, run_stage
from bench.stack import LoadDriver, Stack, start_stack
from ki2api.state.base import ClientKeyRecord, SlotHolder, StateStore, UsageRow
from ki2api.state.client_key_rules import hash_key, key_hint, new_key
from ki2api.state.redis_store import RedisStore
from ki2api.state.sqlite import SQLiteStore

__all__ = ["store_section"]

Json = dict[str, Any]

KINDS = ("sqlite", "redis")
WARMUP_STAGES = 3  # 64 x 5 short streams each, per gateway
ROUNDS = 6  # alternating sqlite / redis (the difference is small: many rounds)
WORKERS = 8
PER_WORKER = 50  # 400 requests per stage: about a second of gateway CPU
MICRO_CALLS = 1000
MICRO_USAGE_BATCHES = 20


def _start_redis(where: Path, logs: Path) -> tuple[Child, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    where.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(where)]  # fmt: skip
    child = Child("redis", argv, log_dir=logs)
    deadline = time.monotonic() + 10
    while True:
        ping = subprocess.run(
            ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True, check=False
        )
        if ping.stdout.strip() == "PONG":
            return child, f"redis://127.0.0.1:{port}/0"
        if child.poll() is not None or time.monotonic() > deadline:
            child.stop()
            raise RuntimeError(f"redis-server did not start:\n{child.log_tail()}")
        time.sleep(0.05)


def _open(spec: str) -> StateStore:
    if spec.startswith("redis://"):
        return RedisStore.open(spec)
    return SQLiteStore.open(Path(spec.removeprefix("sqlite:")))


def _on_store(spec: str, use: Callable[[StateStore], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        store = _open(spec)
        try:
            return await use(store)
        finally:
            await store.aclose()

    return asyncio.run(go())


def _client_key(spec: str) -> tuple[str, str]:
    """A client key in the store (no limit the load reaches) -> (its id, the key)."""
    key = new_key()
    record = ClientKeyRecord(
        "ck-bench", "bench", hash_key(key), key_hint(key), rpm=10**9, created_at=time.time()
    )
    if not _on_store(spec, lambda store: store.create_client_key(record)):
        raise RuntimeError(f"could not create the bench's client key in {spec.split('@')[-1]}")
    return record.id, key


def _stage(stack: Stack, load: LoadDriver, key: str, per_worker: int, workers: int) -> Json:
    target = {**stack.targets()["gateway"], "secret": key}
    spec = {"stage": "requests", "target": target, "workers": workers,
            "per_worker": per_worker, "warmup": 1, "directive": TTFT_DIRECTIVE}  # fmt: skip
    result = run_stage(stack, load, spec, 180)
    SENT[stack.gateway.name] = SENT.get(stack.gateway.name, 0) + result["n"] + workers  # warm-up
    return result


SENT: dict[str, int] = {}  # requests sent to each gateway (its name), warm-ups included


def _usage_rows(spec: str, expected: int) -> int:
    """The usage rows in the store once the gateway has written them all (it writes in batches,
    a moment after the answers), or what is there after 10 s."""
    deadline = time.monotonic() + 10
    while (count := int(_on_store(spec, _usage_count))) < expected:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return count


def _load_runs(
    stacks: dict[str, Stack], keys: dict[str, str], load: LoadDriver, redis: Child
) -> Json:
    for _ in range(WARMUP_STAGES):
        for kind in KINDS:
            _stage(stacks[kind], load, keys[kind], 5, 64)
    totals = {kind: {"n": 0, "ok": 0, "errors": 0, "gw_cpu": 0.0, "redis_cpu": 0.0, "s": 0.0}
              for kind in KINDS}  # fmt: skip
    per_round: dict[str, list[float]] = {kind: [] for kind in KINDS}
    samples: list[str] = []
    for _ in range(ROUNDS):
        for kind in KINDS:
            redis_before = cpu_seconds(redis.pid)
            result = _stage(stacks[kind], load, keys[kind], PER_WORKER, WORKERS)
            t = totals[kind]
            t["redis_cpu"] += cpu_seconds(redis.pid) - redis_before
            t["n"] += result["n"]
            t["ok"] += result["ok"]
            t["errors"] += result["errors"]
            t["s"] += result["elapsed_s"]
            t["gw_cpu"] += result["delta"]["gateway_cpu_s"]
            per_round[kind].append(result["delta"]["gateway_cpu_s"] * 1e3 / max(result["ok"], 1))
            samples += result["error_samples"] if result["errors"] else []
    out: Json = {"error_samples": samples[:5]}
    for kind, t in totals.items():
        ok = max(int(t["ok"]), 1)
        out[kind] = {
            "requests": t["n"],
            "ok": t["ok"],
            "errors": t["errors"],
            "requests_per_s": t["n"] / t["s"] if t["s"] else None,
            "gateway_cpu_ms_per_request": t["gw_cpu"] * 1e3 / ok,
            "redis_server_cpu_ms_per_request": t["redis_cpu"] * 1e3 / ok,
            "gateway_cpu_ms_per_request_by_round": per_round[kind],
        }
    sqlite_ms = out["sqlite"]["gateway_cpu_ms_per_request"]
    redis_ms = out["redis"]["gateway_cpu_ms_per_request"]
    out["ratio_redis_to_sqlite"] = redis_ms / sqlite_ms if sqlite_ms else None
    out["redis_extra_ms_per_request"] = redis_ms - sqlite_ms
    return out


async def _timed(n: int, call: Callable[[int], Awaitable[Any]]) -> Json:
    await call(-1)  # connect, prepare
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        await call(i)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"calls": n, "wall_us": wall * 1e6 / n, "cpu_us": cpu * 1e6 / n}


async def _micro(store: StateStore, key_id: str) -> Json:
    holder = SlotHolder("bench-host", 1)

    async def lease(i: int) -> None:
        now = time.time()
        await store.take_slot("bench", f"l{i}", holder, cap=0, interval_s=0, now=now, ttl_s=60)
        await store.free_slot("bench", f"l{i}")

    async def usage(i: int) -> None:
        now = time.time()
        row = UsageRow(now, "bench", "bench", "claude-sonnet-4.5", 10, 20, 5.0, "ok")
        await store.record_usage([row] * 100)

    return {
        "changed": await _timed(MICRO_CALLS, lambda i: store.changed()),
        "slot_lease": await _timed(MICRO_CALLS, lease),
        "admission": await _timed(
            MICRO_CALLS, lambda i: store.admit_client_key(key_id, time.time())
        ),
        "usage_batch_of_100": await _timed(MICRO_USAGE_BATCHES, usage),
    }


async def _usage_count(store: StateStore) -> int:
    return await store.usage_count()


def store_section(root: Path, logs: Path) -> Json:
    SENT.clear()
    redis, redis_url = _start_redis(root / "redis", logs)
    stacks: dict[str, Stack] = {}
    load: LoadDriver | None = None
    try:
        specs = {"sqlite": f"sqlite:{root / 'sqlite.sqlite3'}", "redis": redis_url}
        ids, keys = {}, {}
        for kind in KINDS:
            ids[kind], keys[kind] = _client_key(specs[kind])
            extra = {"KI2API_STORE": specs[kind]}
            stacks[kind] = start_stack(root / kind, logs, extra, name=f"gateway-{kind}")
        load = LoadDriver(logs)
        result = _load_runs(stacks, keys, load, redis)
        for kind in KINDS:  # every request answered was logged in its own store
            sent = SENT.get(f"gateway-{kind}", 0)
            result[kind]["usage_rows_expected"] = sent
            result[kind]["usage_rows"] = _usage_rows(specs[kind], sent)
        result["micro"] = {
            kind: _on_store(specs[kind], functools.partial(_micro, key_id=ids[kind]))
            for kind in KINDS
        }
        result["load_plan"] = {"rounds": ROUNDS, "workers": WORKERS, "per_worker": PER_WORKER,
                               "events": TTFT_DIRECTIVE["chunks"]}  # fmt: skip
        return result
    finally:
        if load is not None:
            load.stop()
        for stack in stacks.values():
            stack.stop()
        redis.stop()
