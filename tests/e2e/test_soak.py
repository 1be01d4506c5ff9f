"""A soak: 10,000 chat requests through the gateway while the emulator injects faults (issue 5).

Three accounts (a `KIRO_CREDS_DIR` pool), each failing 15% of its requests with a random fault
(every fault the emulator knows except `quota_exhausted`, which would retire an account until
next month and leave nothing to soak), stalls longer than the gateway's one-second first-event
and read timeouts. 16 clients at a time, both surfaces, streaming and not. Every request must
end with a complete answer or a clean error in its client's dialect: never a 500, never a
stream that finishes normally after (or instead of) an error, never a hang. Afterwards nothing
leaked: no stream open at the emulator, no connection left once idle ones time out, no task
left in the gateway's event loop, no file descriptor; and the usage log holds exactly one row
per request, its "ok" rows exactly the complete answers.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from ki2api.server.app import create_app
from tests.conftest import Account, gateway_settings
from tests.support.procs import Outcome, PoolMember, chat, emulator_stats, make_pool, tcp_entries
from tests.support.servers import serve_in_thread

KEY = "soak-key"
REQUESTS = 10_000
WARM_UP = 64
CONCURRENCY = 16
CLIENT_TIMEOUT_S = 60.0
FAULTS = [
    "throttled",
    "server_error",
    "unavailable",
    "high_load",
    "empty_stream",
    "end_without_closing",
    "truncate",
    "drop_connection",
    "first_event_delay",
    "stall",
]


class LoopProbe:
    """Wraps the gateway app to remember the event loop uvicorn runs it on (test side only)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.loop = asyncio.get_running_loop()
        await self.app(scope, receive, send)

    def tasks(self) -> int:
        async def count() -> int:
            return len(asyncio.all_tasks()) - 1  # not this one

        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(count(), self.loop).result(timeout=10)


async def _run(url: str, total: int, start: int) -> list[Outcome]:
    gate = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)

    async def one(client: httpx.AsyncClient, i: int) -> Outcome:
        async with gate:
            try:
                return await chat(
                    client, f"soak {i}", anthropic=i % 2 == 1, stream=i % 4 >= 2, key=KEY
                )
            except httpx.HTTPError as exc:  # a hang (client timeout) or a broken connection
                return Outcome(0, False, f"request {i}: {type(exc).__name__}: {exc}")

    async with httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT_S, limits=limits) as c:
        return list(await asyncio.gather(*(one(c, i) for i in range(start, start + total))))


def _emulator_sockets(port: int) -> set[int]:
    """Inodes of established connections to or from the emulator (both ends live here)."""
    return {
        e.inode for e in tcp_entries() if e.established and port in (e.local_port, e.remote_port)
    }


def _fds() -> dict[str, str]:
    out: dict[str, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[name] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
    return out


def _settled(port: int, probe: LoopProbe) -> tuple[int, int]:
    """(file descriptors, gateway tasks) once idle upstream connections have timed out."""
    deadline = time.monotonic() + 20
    while _emulator_sockets(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _emulator_sockets(port), "connections to the emulator stayed open"
    return len(_fds()), probe.tasks()


def _make_members(emulator_url: str, where: Path) -> list[PoolMember]:
    members = make_pool(emulator_url, where / "creds", ["soak0", "soak1", "soak2"])
    for n, m in enumerate(members):
        behaviour = {
            "fault_rate": 0.15,
            "faults": FAULTS,
            "fault_delay_ms": 1500,
            "retry_after_s": 0,
        }
        r = httpx.patch(
            f"{emulator_url}/_emulator/accounts/{m.emu_id}",
            json={"behaviour": {**behaviour, "fault_seed": 1000 + n}},
        )
        r.raise_for_status()
    return members


def _usage_counts(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as conn:
        (rows,) = conn.execute("SELECT COUNT(*) FROM usage").fetchone()
        (ok,) = conn.execute("SELECT COUNT(*) FROM usage WHERE outcome = 'ok'").fetchone()
    return int(rows), int(ok)


@pytest.mark.long(75)
@pytest.mark.timeout(600)  # a hang guard: 10,000 requests on a busy machine
def test_soak_10000_requests_with_random_faults(
    tmp_path: Path, emulator_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    members = _make_members(emulator_url, tmp_path)
    first = members[0]
    settings = gateway_settings(
        emulator_url,
        Account(first.emu_id, first.token_file, first.data),
        tmp_path,
        api_keys=(KEY,),
        kiro_creds_file=None,
        kiro_creds_dir=tmp_path / "creds",
        first_event_timeout_s=1.0,
        read_timeout_s=1.0,
        keepalive_interval_s=0.2,
        throttle_cooldown_s=0.2,
        error_cooldown_s=0.2,
    )
    emulator_port = int(emulator_url.rsplit(":", 1)[1])
    probe = LoopProbe(create_app(settings))
    outcomes: list[Outcome] = []
    with serve_in_thread(probe) as url:
        outcomes += asyncio.run(_run(url, WARM_UP, 0))
        fds_before, tasks_before = _settled(emulator_port, probe)
        started = time.monotonic()
        outcomes += asyncio.run(_run(url, REQUESTS, WARM_UP))
        elapsed = time.monotonic() - started
        busy = _emulator_sockets(emulator_port)
        assert len(busy) <= 2 * (CONCURRENCY + 4), "more upstream connections than the pool"
        stats = emulator_stats(emulator_url, members)
        fds_after, tasks_after = _settled(emulator_port, probe)
    broken = [o.problem for o in outcomes if o.problem]
    assert not broken, f"{len(broken)} broken: {broken[:5]}"
    assert all(s["streams_now"] == 0 for s in stats.values()), stats
    assert sum(s["faults"] for s in stats.values()) > REQUESTS // 20, stats  # faults did fire
    assert tasks_after <= tasks_before, (tasks_before, tasks_after)
    assert fds_after <= fds_before + 4, (fds_before, fds_after)
    ok = sum(o.ok for o in outcomes)
    rows, ok_rows = _usage_counts(settings.data_dir / "ki2api.sqlite3")
    assert rows == WARM_UP + REQUESTS
    assert ok_rows == ok
    with capsys.disabled():
        print(f"\nsoak: {REQUESTS} requests in {elapsed:.1f} s, {ok} complete, stats {stats}")
