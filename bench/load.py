"""The load generator: a separate process, driven by `bench.run` over stdin/stdout JSON lines.

Protocol, one JSON object per line:
  run -> load  a stage spec (`{"stage": "requests" | "hold", ...}`), or `{"cmd": "exit"}`
  load -> run  `{"phase": "ready"}` once connections are open and warmed up
  run -> load  `{"cmd": "go"}` (run samples the servers' CPU / memory just before)
  load -> run  requests: `{"phase": "done", ...}`;
               hold: `{"phase": "held", ...}`, then after `{"cmd": "release"}` `{"phase": "done"}`
Anything wrong: `{"phase": "error", "error": "..."}`. Running the generator in its own process
keeps its CPU out of the gateway's figures.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from bench.client import Connection
from bench.proc import raise_nofile_limit
from bench.streams import StreamResult, Target, run_stream

__all__ = ["main"]

Json = dict[str, Any]


def emit(obj: Mapping[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(dict(obj)).decode() + "\n")
    sys.stdout.flush()


async def read_message() -> Json | None:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    return orjson.loads(line) if line.strip() else None


async def ready(**info: Any) -> None:
    """Tell the driver we are set, and wait for its go."""
    emit({"phase": "ready", **info})
    msg = await read_message()
    if not msg or msg.get("cmd") != "go":
        raise RuntimeError(f"expected go, got {msg!r}")


def summarize(results: list[StreamResult], expect_events: int | None) -> Json:
    good = [r for r in results if r.ok]
    errors = [r.error for r in results if not r.ok]
    expect = expect_events
    mismatched = sum(1 for r in good if expect is not None and r.content_events != expect)
    return {
        "n": len(results),
        "ok": len(good),
        "errors": len(errors),
        "error_samples": sorted(set(e or "" for e in errors))[:5],
        "ttft_ms": [r.ttft_ns / 1e6 for r in good if r.ttft_ns is not None],
        "content_events_mean": sum(r.content_events for r in good) / len(good) if good else 0,
        "events_mismatched": mismatched,
    }


async def _worker(
    conn: Connection, target: Target, directive: Json, n: int, delay_s: float = 0.0
) -> list[StreamResult]:
    if delay_s:
        await asyncio.sleep(delay_s)
    return [await run_stream(conn, target, directive) for _ in range(n)]


async def requests_stage(spec: Json) -> Json:
    """`workers` keep-alive connections, each sending `per_worker` requests one after another."""
    target = Target.from_dict(spec["target"])
    directive, workers = spec["directive"], int(spec["workers"])
    conns = [Connection(target.host, target.port) for _ in range(workers)]
    try:
        warm = int(spec.get("warmup", 0))
        await asyncio.gather(*(_worker(c, target, directive, warm) for c in conns))
        await ready()
        t0 = time.perf_counter()
        per = int(spec["per_worker"])
        # `stagger_s`: worker i starts i x stagger_s after the go, so clients whose answers
        # take a while arrive spread out, as real ones do, not all in the same instant
        stagger = float(spec.get("stagger_s", 0.0))
        batches = await asyncio.gather(
            *(_worker(c, target, directive, per, i * stagger) for i, c in enumerate(conns))
        )
        elapsed = time.perf_counter() - t0
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    result = summarize([r for batch in batches for r in batch], spec.get("expect_events"))
    return {**result, "elapsed_s": elapsed}


class _Ramp:
    """Counts streams that got their first content; bounds how many are opening at once."""

    def __init__(self, total: int, opening: int) -> None:
        self.total = total
        self.first = 0
        self.gate = asyncio.Semaphore(opening)

    async def stream(self, conn: Connection, target: Target, directive: Json) -> StreamResult:
        await self.gate.acquire()
        released = False

        def on_first() -> None:
            nonlocal released
            self.first += 1
            released = True
            self.gate.release()

        try:
            return await run_stream(conn, target, directive, on_first)
        finally:
            if not released:
                self.gate.release()


async def _warm(target: Target, directive: Json, n: int) -> None:
    conn = Connection(target.host, target.port)
    try:
        await _worker(conn, target, directive, n)
    finally:
        await conn.close()


async def hold_stage(spec: Json) -> Json:
    """Open `streams` slow streams at once, report when all are flowing, drop them on release."""
    target = Target.from_dict(spec["target"])
    total = int(spec["streams"])
    await _warm(target, spec["warmup_directive"], int(spec.get("warmup", 4)))
    await ready()
    ramp = _Ramp(total, int(spec.get("opening", 200)))
    conns = [Connection(target.host, target.port) for _ in range(total)]
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(ramp.stream(c, target, spec["directive"])) for c in conns]
    deadline = t0 + float(spec.get("open_timeout_s", 60))
    # The streams are far longer than the ramp: any stream that ends now is a failure.
    while time.perf_counter() < deadline and ramp.first < total:
        if any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.02)
    ramp_s = time.perf_counter() - t0
    failed = [t.result() for t in tasks if t.done()]
    held = sum(1 for t in tasks if not t.done()) if ramp.first >= total else 0
    emit(
        {
            "phase": "held",
            "held": held,
            "first_content": ramp.first,
            "ended_early": len(failed),
            "error_samples": sorted({r.error or "ended early" for r in failed})[:5],
            "ramp_s": ramp_s,
        }
    )
    msg = await read_message()
    still_open = sum(1 for t in tasks if not t.done())
    for c in conns:
        c.abort()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"released": (msg or {}).get("cmd") == "release", "still_open_at_release": still_open}


_STAGES: dict[str, Callable[[Json], Awaitable[Json]]] = {
    "requests": requests_stage,
    "hold": hold_stage,
}


async def _serve() -> None:
    while True:
        msg = await read_message()
        if msg is None or msg.get("cmd") == "exit":
            return
        try:
            result = await _STAGES[msg["stage"]](msg)
        except Exception as exc:  # report to the driver, keep serving
            emit({"phase": "error", "error": f"{type(exc).__name__}: {exc}"[:500]})
            continue
        emit({"phase": "done", **result})


def main() -> None:
    raise_nofile_limit(32768)
    asyncio.run(_serve())


if __name__ == "__main__":
    main()
