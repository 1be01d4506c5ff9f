"""A redis-server of a test's own that it can stop and start again on the same port, with its
data kept across restarts (append-only file, fsync on every write: like a real deployment),
for the tests of a Redis outage (state/resilient_store.py)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from tests.support.stores import start_redis

__all__ = ["RedisProc", "own_redis"]

_PERSIST = ("--appendonly", "yes", "--appendfsync", "always")


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisProc:
    """`url`: the server (no prefix); `stop()` kills it (what was acknowledged is on disk),
    `start()` runs it again on the same port and directory."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self._proc, self.url = start_redis(where, *_PERSIST)  # empty: no LOADING
        port = urllib.parse.urlsplit(self.url).port
        assert port is not None
        self.port = port

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def stop(self) -> None:
        self._proc.kill()
        self._proc.wait(timeout=10)

    def start(self) -> None:
        """Start it again; back once it answers PING (its data loaded: no LOADING error)."""
        assert not self.running
        self._proc, _ = start_redis(self.where, *_PERSIST, port=self.port)
        deadline = time.monotonic() + 10
        while not _pong(self.port):
            assert time.monotonic() < deadline, "redis-server did not load its data in 10 s"
            time.sleep(0.01)

    def close(self) -> None:
        if self.running:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


@contextlib.contextmanager
def own_redis(where: Path) -> Iterator[RedisProc]:
    """A `RedisProc` in `where`, closed after (a test module's fixture uses it)."""
    server = RedisProc(where)
    try:
        yield server
    finally:
        server.close()
