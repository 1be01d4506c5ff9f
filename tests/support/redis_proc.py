"""A redis-server of a test's own that it can stop and start again on the same port, with its
data kept across restarts (append-only file, fsync on every write: like a real deployment),
for the tests of a Redis outage (state/resilient_store.py)."""

from __future__ import annotations

import contextlib
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from tests.support.stores import start_redis

__all__ = ["RedisProc", "own_redis"]

_PERSIST = ("--appendonly", "yes", "--appendfsync", "always")


class RedisProc:
    """`url`: the server (no prefix); `stop()` kills it (what was acknowledged is on disk),
    `start()` runs it again on the same port and directory."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self._proc, self.url = start_redis(where, *_PERSIST)
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
        assert not self.running
        self._proc, _ = start_redis(self.where, *_PERSIST, port=self.port)

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
