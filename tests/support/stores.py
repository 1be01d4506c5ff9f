"""The state stores the contract tests run against: SQLite, and Redis on a real `redis-server`.

`redis_server` (session scope: one server per xdist worker) starts Debian's redis-server on a
free port, without persistence, in a temporary directory. Each test that opens a Redis store
gets its own key prefix, so tests never see each other's keys (nothing to flush). Without
redis-server the Redis cases skip, saying how to install it; with KI2API_REQUIRE_REDIS=1
(`.ci/run`) they fail instead.

`store_factory` is parametrised over both kinds: it opens store objects that share one backing
(the same SQLite file, or the same Redis prefix), as two workers or replicas would, and closes
them after the test. Import the fixtures into a test module to use them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ki2api.state.redis_store import RedisStore
from ki2api.state.sqlite import SQLiteStore

__all__ = [
    "KINDS",
    "StoreFactory",
    "redis_server",
    "start_redis",
    "store_factory",
    "unique_prefix",
]

KINDS = ["sqlite", "redis"]
INSTALL_HINT = "redis-server is not installed (apt-get install redis-server)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int, any_answer: bool = False) -> bool:
    """Does the server answer PING (with a password set: answer at all, NOAUTH)?"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            answer = s.recv(16)
            return answer.startswith(b"+PONG") or (any_answer and answer.startswith(b"-"))
    except OSError:
        return False


def start_redis(
    where: Path, *extra: str, port: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server of our own on 127.0.0.1 (the caller stops it), with `extra` options
    (`--requirepass`, ...); its URL (without a password)."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("KI2API_REQUIRE_REDIS") == "1":
            pytest.fail(f"{INSTALL_HINT}; KI2API_REQUIRE_REDIS=1 says it must run")
        pytest.skip(INSTALL_HINT)
    where.mkdir(parents=True, exist_ok=True)
    for _ in range(5):  # another process may take the free port first
        chosen = port or _free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(chosen), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(where), "--logfile", str(where / "redis.log"),
             *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            if _answers(chosen, bool(extra)):
                return proc, f"redis://127.0.0.1:{chosen}/0"
            time.sleep(0.01)
        proc.kill()
        proc.wait()
    pytest.fail("redis-server did not start (see redis.log in the test's temporary directory)")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def unique_prefix(server: str) -> str:
    """The server's URL with a key prefix of its own (a test's keys meet no other test's)."""
    return f"{server}?prefix=t{uuid.uuid4().hex[:12]}:"


class StoreFactory:
    """Opens stores of one kind sharing one backing; `kind` is "sqlite" or "redis"."""

    def __init__(self, kind: str, sqlite_path: Path, redis_url: str | None) -> None:
        self.kind = kind
        self.sqlite_path = sqlite_path
        self.redis_url = redis_url
        self.opened: list[Any] = []

    def __call__(self, clock: Callable[[], float] = time.time) -> Any:
        """A new store object (SQLiteStore or RedisStore) on the shared backing."""
        if self.kind == "sqlite":
            store: Any = SQLiteStore.open(self.sqlite_path, clock=clock)
        else:
            assert self.redis_url is not None
            store = RedisStore.open(self.redis_url, clock=clock)
        self.opened.append(store)
        return store

    async def aclose(self) -> None:
        for store in self.opened:
            await store.aclose()


@pytest.fixture(params=KINDS)
async def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    url = None
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        url = unique_prefix(server)
    factory = StoreFactory(request.param, tmp_path / "state" / "ki2api.db", url)
    try:
        yield factory
    finally:
        await factory.aclose()


T = TypeVar("T")


def on_redis(url: str, use: Callable[[RedisStore], Awaitable[T]]) -> T:
    """`use` a RedisStore of its own on `url`, from synchronous test code (a redis-py client
    belongs to one event loop, so each call opens and closes its own)."""

    async def go() -> T:
        store = RedisStore.open(url)
        try:
            return await use(store)
        finally:
            await store.aclose()

    return asyncio.run(go())
