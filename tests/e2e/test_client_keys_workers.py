"""Client keys with `ki2api serve --workers 2` (a real subprocess): a key's rpm is one limit for
both workers (the counters live in the store), and a revoke made by the CLI refuses the key in
every worker within a second (chat and /v1/models alike). Which worker serves a connection is
read from /proc (tests/support/procs.py), so "both workers" is a fact.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ki2api.state.client_key_rules import window_of
from tests.support.procs import (
    GatewayProc,
    make_pool,
    pool_env,
    run_cli,
    socket_owners,
    tcp_entries,
)

ADMIN = "workers-admin-key"


class Worker:
    """A keep-alive connection held by one worker process."""

    def __init__(self, conn: http.client.HTTPConnection, pid: int) -> None:
        self.conn, self.pid = conn, pid

    def call(self, key: str, path: str = "/v1/chat/completions") -> int:
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        if path.endswith("completions"):
            body = {"model": "claude-sonnet-4.5", "messages": [{"role": "user", "content": "hi"}]}
            self.conn.request("POST", path, json.dumps(body), headers)
        else:
            self.conn.request("GET", path, headers=headers)
        r = self.conn.getresponse()
        r.read()
        return r.status


def _port(gw: GatewayProc) -> int:
    return int(gw.url.rsplit(":", 1)[1])


def _owner(gw: GatewayProc, local_port: int) -> int | None:
    inodes = {
        e.inode for e in tcp_entries() if e.local_port == _port(gw) and e.remote_port == local_port
    }
    owners = [pid for pid, n in socket_owners(inodes, gw.workers()).items() if n]
    return owners[0] if len(owners) == 1 else None


def _one_per_worker(gw: GatewayProc) -> list[Worker]:
    found: dict[int, Worker] = {}
    for _ in range(200):
        conn = http.client.HTTPConnection("127.0.0.1", _port(gw), timeout=30)
        conn.request("GET", "/health")
        conn.getresponse().read()
        assert conn.sock is not None
        pid = _owner(gw, conn.sock.getsockname()[1])
        if pid is not None and pid not in found:
            found[pid] = Worker(conn, pid)
            if len(found) == 2:
                return list(found.values())
        else:
            conn.close()
    pytest.fail(f"200 connections all went to one worker: {list(found)}")


@pytest.fixture
def served(tmp_path: Path, emulator_url: str) -> Iterator[tuple[GatewayProc, Path]]:
    home, cwd, creds, data = (tmp_path / n for n in ("home", "cwd", "creds", "data"))
    for p in (home, cwd, creds):
        p.mkdir()
    make_pool(emulator_url, creds, ["k0"])
    env = pool_env(emulator_url, creds, data, ADMIN)
    gw = GatewayProc.serve(home, cwd, workers=2, **env)
    try:
        yield gw, data
    finally:
        gw.stop()


def _keys(tmp_path: Path, data: Path, *args: str) -> str:
    home = tmp_path / "cli-home"
    home.mkdir(exist_ok=True)
    done = run_cli(home, tmp_path, ["keys", *args], {"KI2API_DATA_DIR": str(data)})
    assert done.returncode == 0, done.stderr
    return done.stdout


def _create(tmp_path: Path, data: Path, name: str, *limits: str) -> str:
    return str(json.loads(_keys(tmp_path, data, "create", name, *limits, "--json"))["key"])


@pytest.mark.long(10)
def test_limits_and_revoke_hold_in_every_worker(
    served: tuple[GatewayProc, Path], tmp_path: Path
) -> None:
    gw, data = served
    first, second = _one_per_worker(gw)
    try:
        shared = _create(tmp_path, data, "shared", "--rpm", "3")
        window = window_of("minute", time.time())
        statuses = [(first if i % 2 else second).call(shared) for i in range(4)]
        if window_of("minute", time.time()) == window:  # else a new minute reset the count
            assert statuses == [200, 200, 200, 429]
        doomed = _create(tmp_path, data, "doomed")
        for worker in (first, second):  # each worker has the key in its cache
            assert worker.call(doomed) == 200
            assert worker.call(doomed, "/v1/models") == 200
        _keys(tmp_path, data, "revoke", "doomed")
        revoked_at = time.monotonic()
        for worker in (first, second):
            assert worker.call(doomed) == 401
            while worker.call(doomed, "/v1/models") != 401:
                assert time.monotonic() - revoked_at < 1.0, "a worker still accepts the key"
                time.sleep(0.02)
        assert time.monotonic() - revoked_at < 1.0
        assert first.pid != second.pid
    finally:
        first.conn.close()
        second.conn.close()
