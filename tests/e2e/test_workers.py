"""`ki2api serve --workers 2` as a real subprocess against the session emulator (issue 5).

Two worker processes share one SQLite store: a token refresh happens once per account, not once
per worker, and a cooldown one worker learnt keeps the other off that account. Which worker
took a connection is read from /proc (the worker process holding the server side of it), so
"both workers served" is a fact, not a hope.
"""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.procs import (
    GatewayProc,
    Outcome,
    PoolMember,
    chat,
    emulator_stats,
    make_pool,
    pool_env,
    socket_owners,
    tcp_entries,
)

KEY = "workers-key"
REQUESTS = 200


@dataclass(frozen=True)
class Dirs:
    home: Path
    cwd: Path
    creds: Path
    data: Path


@pytest.fixture
def dirs(tmp_path: Path) -> Dirs:
    d = Dirs(tmp_path / "home", tmp_path / "cwd", tmp_path / "creds", tmp_path / "data")
    for p in (d.home, d.cwd, d.creds):
        p.mkdir()
    return d


@pytest.fixture
def start_workers(dirs: Dirs, emulator_url: str) -> Iterator[object]:
    started: list[GatewayProc] = []

    def start(**extra: str) -> GatewayProc:
        env = pool_env(emulator_url, dirs.creds, dirs.data, KEY, **extra)
        gw = GatewayProc.serve(dirs.home, dirs.cwd, workers=2, **env)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


def _port(gw: GatewayProc) -> int:
    return int(gw.url.rsplit(":", 1)[1])


def _workers_holding_connections(gw: GatewayProc) -> dict[int, int]:
    """Worker pid -> client connections it holds open now."""
    port = _port(gw)
    inodes = {e.inode for e in tcp_entries() if e.local_port == port and e.established}
    return dict(socket_owners(inodes, gw.workers()))


async def _burst(gw: GatewayProc) -> tuple[list[Outcome], dict[int, int]]:
    limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=REQUESTS)
    async with httpx.AsyncClient(base_url=gw.url, timeout=60, limits=limits) as client:
        calls = [
            chat(client, f"burst {i}", anthropic=i % 2 == 1, stream=i % 4 >= 2, key=KEY)
            for i in range(REQUESTS)
        ]
        outcomes = await asyncio.gather(*calls)
        held = _workers_holding_connections(gw)  # keep-alive: still open, still owned
    return list(outcomes), held


@pytest.mark.parametrize("how", ["token files expired", "emulator expired them"])
def test_200_concurrent_requests_two_workers_one_refresh_per_account(
    dirs: Dirs, emulator_url: str, start_workers: object, how: str
) -> None:
    expired_in_files = how == "token files expired"
    members = make_pool(emulator_url, dirs.creds, ["w0", "w1", "w2"], expired=expired_in_files)
    if not expired_in_files:  # the files look valid; the gateway learns it from a 403
        for m in members:
            httpx.post(f"{emulator_url}/_emulator/accounts/{m.emu_id}/expire").raise_for_status()
    before = emulator_stats(emulator_url, members)
    gw = start_workers()  # type: ignore[operator]

    outcomes, held = asyncio.run(_burst(gw))

    bad = [o for o in outcomes if not o.ok]
    assert not bad, f"{len(bad)} failed, e.g. {bad[:3]}\n{gw.output()[-3000:]}"
    after = emulator_stats(emulator_url, members)
    refreshes = {k: after[k]["refreshes"] - before[k]["refreshes"] for k in after}
    assert refreshes == {"w0": 1, "w1": 1, "w2": 1}, gw.output()[-3000:]
    served = sum(after[k]["served"] - before[k]["served"] for k in after)
    assert served >= REQUESTS
    busy = [pid for pid, n in held.items() if n > 0]
    assert len(busy) == 2, f"connections per worker: {held}"


# --- a cooldown crosses workers ------------------------------------------------------------------


class Pinned:
    """A keep-alive connection known to be served by one worker process."""

    def __init__(self, conn: http.client.HTTPConnection, worker: int) -> None:
        self.conn = conn
        self.worker = worker
        self.local_port = conn.sock.getsockname()[1]

    def post(self, text: str) -> int:
        body = {
            "model": "claude-sonnet-4-20250514",
            "messages": [{"role": "user", "content": text}],
        }
        headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
        self.conn.request("POST", "/v1/chat/completions", json.dumps(body), headers)
        r = self.conn.getresponse()
        r.read()
        assert self.conn.sock is not None and self.conn.sock.getsockname()[1] == self.local_port
        return r.status


def _owner(gw: GatewayProc, local_port: int) -> int | None:
    port = _port(gw)
    inodes = {
        e.inode for e in tcp_entries() if e.local_port == port and e.remote_port == local_port
    }
    owners = [pid for pid, n in socket_owners(inodes, gw.workers()).items() if n]
    return owners[0] if len(owners) == 1 else None


def _pin_one_per_worker(gw: GatewayProc) -> list[Pinned]:
    """Open connections until each of the two workers holds one (accepts are the kernel's)."""
    pinned: dict[int, Pinned] = {}
    for _ in range(200):
        conn = http.client.HTTPConnection("127.0.0.1", _port(gw), timeout=30)
        conn.request("GET", "/health")
        conn.getresponse().read()
        worker = _owner(gw, conn.sock.getsockname()[1])
        if worker is not None and worker not in pinned:
            pinned[worker] = Pinned(conn, worker)
            if len(pinned) == 2:
                return list(pinned.values())
        else:
            conn.close()
    pytest.fail(f"200 connections all went to one worker: {list(pinned)}")


def _chat_requests(emulator_url: str, member: PoolMember) -> int:
    return emulator_stats(emulator_url, [member])[member.pool_id]["chat_requests"]


def test_a_cooldown_seen_by_one_worker_applies_to_the_other(
    dirs: Dirs, emulator_url: str, start_workers: object
) -> None:
    members = make_pool(emulator_url, dirs.creds, ["c0", "c1", "c2"])
    throttled = members[0]  # the first pick of a worker that has served nothing (ties: by id)
    gw = start_workers(KI2API_THROTTLE_COOLDOWN_S="30")  # type: ignore[operator]
    first, second = _pin_one_per_worker(gw)
    try:
        patch = {"behaviour": {"throttled": True}}
        httpx.patch(f"{emulator_url}/_emulator/accounts/{throttled.emu_id}", json=patch)
        seen = _chat_requests(emulator_url, throttled)
        # the first worker rotates over the accounts: it meets the 429 twice in a row (the
        # first of a series only fails over; the second rests the account)
        for i in range(20):
            assert first.post(f"first worker {i}") == 200
            if _chat_requests(emulator_url, throttled) >= seen + 2:
                break
        else:
            pytest.fail("the first worker never tried the throttled account")
        seen = _chat_requests(emulator_url, throttled)
        for i in range(40):  # the second worker has not served yet: it would pick c0 first
            worker = second if i % 2 == 0 else first
            assert worker.post(f"after the cooldown {i}") == 200
        assert _chat_requests(emulator_url, throttled) == seen
        assert _owner(gw, second.local_port) == second.worker != first.worker
    finally:
        first.conn.close()
        second.conn.close()
