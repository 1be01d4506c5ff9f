"""Several `ki2api serve` replicas on one Redis store (issue 16): tests/e2e/test_replicas.py.

`start_replicas` starts single-process replicas in parallel, each on its own port and data
directory, all with the same KI2API_STORE, and waits until each answers /health.
`store_accounts` puts new emulator logins into that store (source "store": their tokens live in
Redis, as they must when the replicas run on several machines); `wait_pools` waits until every
replica's pool holds exactly the given accounts (a pool picks up the store's accounts on its
next look at `changed()`). `HoldAuth` stands in for Kiro's auth service for one replica: it
takes a refresh request and never answers, so that replica sits in a refresh, holding the
account's refresh lock, until it is killed. `Load` keeps the calls of a load by client (and
what was seen of the kill), `Watch` reads the emulator's counters and Redis's keys meanwhile.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis.asyncio as aioredis

from ki2api.kiro.accounts.registry import add_account
from ki2api.state.redis_base import parse_redis_url
from ki2api.state.redis_store import RedisStore
from tests.support.procs import GatewayProc, Outcome, PoolMember, make_pool
from tests.support.servers import free_port
from tests.support.stores import on_redis

__all__ = [
    "Call",
    "HoldAuth",
    "Load",
    "Watch",
    "park_account",
    "pool_ids",
    "remove_accounts",
    "start_replicas",
    "store_accounts",
    "until",
    "wait_pools",
    "wait_until",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    started: float
    ended: float
    outcome: Outcome | None  # None: no answer (the replica was killed)


@dataclass
class Load:
    calls: dict[int, list[Call]]  # by key index: 0 and 1 the survivors, 3 the killed replica
    killed_at: float = 0.0
    lock_ttl_ms: int = 0  # the refresh lock's time to live as the killed replica held it
    lapsed_after_s: float = 0.0  # from the kill to the lock's key gone from Redis

    def answered(self, i: int) -> int:
        return sum(1 for c in self.calls[i] if c.outcome is not None)


async def until(check: Callable[[], Awaitable[bool]], what: str, within_s: float = 30.0) -> float:
    """Poll `check` until it is true; when it became true (monotonic)."""
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not within {within_s} s"
        await asyncio.sleep(0.02)
    return time.monotonic()


class Watch:
    """What the scenario reads while it runs: the emulator's counters, the lock's key."""

    def __init__(self, emulator_url: str, store_url: str, members: Sequence[PoolMember]) -> None:
        self.emu = httpx.AsyncClient(base_url=emulator_url, timeout=10)
        where = parse_redis_url(store_url)
        self.redis = aioredis.Redis.from_url(where.url)
        self.prefix = where.prefix
        self.members = {m.pool_id: m for m in members}

    async def stats(self, pool_id: str) -> dict[str, int]:
        found = (await self.emu.get("/_emulator/stats")).json()["accounts"]
        return dict(found[self.members[pool_id].emu_id])

    def lock_key(self, pool_id: str) -> str:
        return f"{self.prefix}lock:refresh:{pool_id}"

    async def aclose(self) -> None:
        await self.emu.aclose()
        await self.redis.aclose()


def wait_until(check: Callable[[], bool], what: str, within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {within_s} s"
        time.sleep(0.02)


def start_replicas(home: Path, cwd: Path, envs: Sequence[dict[str, str]]) -> list[GatewayProc]:
    """One single-process `ki2api serve` per env, all started before any is waited for."""
    started: list[GatewayProc] = []
    try:
        for env in envs:
            port = free_port()
            args = ("serve", "--host", "127.0.0.1", "--port", str(port))
            started.append(GatewayProc.start(home, cwd, port, *args, **env))
        for gw in started:
            gw.wait_healthy()
    except BaseException:
        for gw in started:
            gw.kill()
        raise
    return started


def store_accounts(
    emulator_url: str,
    store_url: str,
    folder: Path,
    ids: Sequence[str],
    *,
    expired: bool = False,
    behaviour: dict[str, Any] | None = None,
) -> list[PoolMember]:
    """New emulator accounts, put into the store under `ids` with their tokens (expired at the
    emulator and in the store with `expired`)."""
    members = make_pool(emulator_url, folder, ids, behaviour, expired=expired)

    async def add(store: RedisStore) -> None:
        for m in members:
            await add_account(store, m.data["token_file"], label=m.pool_id, account_id=m.pool_id)

    on_redis(store_url, add)
    return members


def remove_accounts(store_url: str, ids: Iterable[str]) -> None:
    async def remove(store: RedisStore) -> None:
        for account_id in ids:
            await store.remove_account(account_id)

    on_redis(store_url, remove)


def park_account(store_url: str, folder: Path, emulator_url: str) -> None:
    """A disabled account in the store: `ki2api serve` refuses to start with none at all, and a
    disabled one is never chosen (nor counted by `pool_ids`)."""
    [member] = store_accounts(emulator_url, store_url, folder, ["parked"])

    async def disable(store: RedisStore) -> None:
        await store.set_enabled(member.pool_id, False, "parked by the test")

    on_redis(store_url, disable)


def pool_ids(gw: GatewayProc) -> set[str]:
    """The enabled accounts of a replica's pool (its /health syncs with the store first)."""
    r = httpx.get(f"{gw.url}/health", headers={"x-api-key": gw.api_key}, timeout=10)
    r.raise_for_status()
    return {str(a["id"]) for a in r.json().get("pool", []) if a["enabled"]}


def wait_pools(replicas: Sequence[GatewayProc], ids: Iterable[str]) -> None:
    wanted = set(ids)
    for gw in replicas:
        wait_until(lambda gw=gw: pool_ids(gw) == wanted, f"{gw.url}'s pool is {sorted(wanted)}")


class HoldAuth:
    """An HTTP listener that reads each request and never answers it: a refresh that hangs.

    `bodies` are the request bodies received, in order; `arrived` is set by the first. A
    connection is dropped when its client goes away (the replica was killed)."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.bodies: list[bytes] = []
        self.arrived = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        conn.settimeout(None)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, body = data.split(b"\r\n\r\n", 1)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                body += chunk
            with self._lock:
                self.bodies.append(body)
            self.arrived.set()
            while conn.recv(65536):  # never answer; until the client is gone
                pass
        except OSError:
            return
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
