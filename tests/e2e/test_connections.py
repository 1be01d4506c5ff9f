"""Bounded client connections (server/connections.py) against the real stack: the gateway on
uvicorn with the protocol `ki2api serve` uses, raw sockets on 127.0.0.1 as the abusive clients.

Deadlines are set short through settings (1-2 s); every wait is a poll with a generous bound,
every socket is closed in `finally`.
"""

from __future__ import annotations

import asyncio
import logging
import select
import selectors
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from ki2api.kiro.accounts.registry import store_path
from ki2api.state.base import UsageRow
from ki2api.state.sqlite import SQLiteStore
from tests.conftest import API_KEY, Gateway, make_account
from tests.e2e.test_cli import Sandbox, emulator_env, get_ok, running
from tests.support.servers import free_port

SLACK_S = 5.0  # generous: a loaded CI machine is slow, a missing deadline is for ever


def _address(gw: Gateway) -> tuple[str, int]:
    parts = urlsplit(gw.url)
    assert parts.hostname == "127.0.0.1" and parts.port
    return parts.hostname, parts.port


@contextmanager
def raw_sockets(gw: Gateway, count: int) -> Iterator[list[socket.socket]]:
    """`count` connected sockets to the gateway, all closed at the end."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(socket.create_connection(_address(gw), timeout=10))
        yield socks
    finally:
        for s in socks:
            s.close()


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection; fails after `timeout`."""
    sock.settimeout(timeout)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError:
            pytest.fail(f"the server kept the connection open for {timeout} s")
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def health(gw: Gateway) -> float:
    """Seconds one `GET /health` on a new connection took; it must answer 200."""
    started = time.perf_counter()
    r = httpx.get(f"{gw.url}/health", timeout=10, headers={"connection": "close"})
    assert r.status_code == 200, r.text
    return time.perf_counter() - started


def closed_count(socks: list[socket.socket], timeout: float, enough: int) -> int:
    """How many of `socks` the server has closed (EOF or reset): polled until `enough` are or
    `timeout` passed."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    closed = 0
    deadline = time.monotonic() + timeout
    try:
        while sel.get_map() and closed < enough and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.2):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except ConnectionResetError:
                    data = b""
                if not data:
                    sel.unregister(sock)
                    closed += 1
    finally:
        sel.close()
    return closed


def _head(path: str, *, method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


# Idle connections ----------------------------------------------------------------------------


def test_a_silent_connection_is_closed_after_the_idle_deadline(gateway_factory: Any) -> None:
    gw: Gateway = gateway_factory(idle_timeout_s=1.0)
    with raw_sockets(gw, 3) as socks:
        started = time.monotonic()
        for s in socks:
            assert read_until_closed(s, 1.0 + SLACK_S) == b""  # closed, nothing said
        assert time.monotonic() - started >= 0.5  # by the idle timer, not at once


def test_a_keep_alive_connection_is_closed_after_the_idle_deadline(gateway_factory: Any) -> None:
    gw: Gateway = gateway_factory(idle_timeout_s=1.0)
    with raw_sockets(gw, 1) as (sock,):
        sock.sendall(_head("/health"))
        sock.settimeout(10)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        rest = read_until_closed(sock, 1.0 + SLACK_S)  # then silence: closed by the server
        assert b"HTTP/1.1" not in rest


def test_keep_alive_requests_on_one_connection_still_work(gateway_factory: Any) -> None:
    gw: Gateway = gateway_factory(idle_timeout_s=5.0)
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        for _ in range(5):
            assert client.get("/health").status_code == 200
        assert client.get("/v1/models", headers={"authorization": f"Bearer {API_KEY}"}).is_success


# Slow heads and bodies -----------------------------------------------------------------------


def test_slowloris_heads_get_408_within_the_header_deadline(gateway_factory: Any) -> None:
    gw: Gateway = gateway_factory(header_timeout_s=2.0, idle_timeout_s=30.0)
    head = _head("/v1/models", extra=f"authorization: Bearer {API_KEY}\r\n" + "x-pad: a\r\n" * 20)
    answers: dict[int, bytes] = {}
    timings: list[float] = []
    with raw_sockets(gw, 20) as socks:
        still_open = dict(enumerate(socks))
        started = time.monotonic()
        for i in range(len(head)):  # one byte per connection every 0.5 s, never the whole head
            if not still_open or time.monotonic() - started > 2.0 + SLACK_S:
                break
            for n, s in list(still_open.items()):
                try:
                    s.sendall(head[i : i + 1])
                except (BrokenPipeError, ConnectionResetError):
                    answers[n] = b""
                    del still_open[n]
            timings.append(health(gw))  # the gateway answers others meanwhile
            ready, _, _ = select.select(list(still_open.values()), [], [], 0.5)
            for s in ready:
                n = socks.index(s)
                answers[n] = read_until_closed(s, SLACK_S)
                del still_open[n]
        elapsed = time.monotonic() - started
    print(
        f"\nslowloris: 20 connections closed {elapsed:.1f} s after their first byte "
        f"(deadline 2 s); /health meanwhile max {max(timings) * 1000:.0f} ms"
    )
    assert not still_open, f"{len(still_open)} slowloris connections still open"
    assert elapsed < 2.0 + SLACK_S
    assert sum(a.startswith(b"HTTP/1.1 408") for a in answers.values()) >= 15, answers
    assert max(timings) < SLACK_S


def test_a_trickling_body_is_cut_off_and_logged_as_cancelled(gateway_factory: Any) -> None:
    gw: Gateway = gateway_factory(body_timeout_s=1.0, idle_timeout_s=30.0)
    head = _head(
        "/v1/chat/completions",
        method="POST",
        extra=f"authorization: Bearer {API_KEY}\r\ncontent-type: application/json\r\n"
        "content-length: 1000\r\n",
    )
    with raw_sockets(gw, 1) as (sock,):
        sock.sendall(head + b'{"model": "claude-sonnet-4')
        started = time.monotonic()
        answer = b""
        sock.settimeout(0.3)
        while time.monotonic() - started < 1.0 + SLACK_S:  # one byte every 0.3 s: too slow
            try:
                sock.sendall(b" ")
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if answer:
                answer += read_until_closed(sock, SLACK_S)
                break
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < 1.0 + SLACK_S
    assert health(gw) < SLACK_S
    assert wait_for_outcome(gw, "/v1/chat/completions") == "cancelled"


# The cap -------------------------------------------------------------------------------------


def test_an_idle_flood_beyond_the_cap_does_not_lock_out_health(gateway_factory: Any) -> None:
    cap, flood = 500, 2000
    gw: Gateway = gateway_factory(max_client_connections=cap, idle_timeout_s=60.0)
    timings: list[float] = []
    with raw_sockets(gw, 0) as socks:
        for i in range(flood):
            socks.append(socket.create_connection(_address(gw), timeout=10))
            if i % 200 == 199:
                timings.append(health(gw))
        # Every connection beyond the cap evicted the oldest idle one: at most `cap` stay open.
        closed = closed_count(socks, SLACK_S, enough=flood - cap)
        assert closed >= flood - cap, f"only {closed} of {flood} idle connections were closed"
        timings.append(health(gw))
    print(
        f"\n/health during a {flood}-socket idle flood (cap {cap}): "
        f"max {max(timings) * 1000:.0f} ms, mean {sum(timings) / len(timings) * 1000:.0f} ms"
    )
    assert max(timings) < SLACK_S


def test_busy_connections_at_the_cap_get_503_without_being_read(gateway_factory: Any) -> None:
    gw: Gateway = gateway_factory(max_client_connections=3, body_timeout_s=30.0)
    head = _head(
        "/v1/chat/completions",
        method="POST",
        extra=f"authorization: Bearer {API_KEY}\r\ncontent-length: 100\r\n",
    )
    with raw_sockets(gw, 3) as busy:
        for s in busy:
            s.sendall(head + b"{")  # a request in progress: its body is still coming
        with raw_sockets(gw, 1) as (extra,):
            answer = read_until_closed(extra, SLACK_S)
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b"connection: close" in answer.lower()
        assert b"too_many_connections" in answer
    # Once they are gone there is room again.
    deadline = time.monotonic() + SLACK_S
    while True:
        try:
            health(gw)
            break
        except (AssertionError, httpx.HTTPError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# A client that goes away mid-upload ------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_disconnect_mid_upload_is_quiet_and_cancelled(gateway_factory: Any) -> None:
    gw: Gateway = gateway_factory()
    records = _Records()
    loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "ki2api")]
    for lg in loggers:
        lg.addHandler(records)
    try:
        head = _head(
            "/v1/chat/completions",
            method="POST",
            extra=f"authorization: Bearer {API_KEY}\r\ncontent-length: 1000000\r\n",
        )
        with raw_sockets(gw, 1) as (sock,):
            sock.sendall(head + b'{"model": "claude-sonnet-4-20250514", "messages": [' * 100)
        assert wait_for_outcome(gw, "/v1/chat/completions") == "cancelled"
        assert health(gw) < SLACK_S
    finally:
        for lg in loggers:
            lg.removeHandler(records)
    loud = [r for r in records.records if r.levelno >= logging.WARNING or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud]


def usage_rows(gw: Gateway) -> list[UsageRow]:
    async def rows() -> list[UsageRow]:
        store = SQLiteStore.open(store_path(gw.settings))
        try:
            return await store.usage_rows(limit=100)
        finally:
            await store.aclose()

    return asyncio.run(rows())


def wait_for_outcome(gw: Gateway, endpoint: str, timeout: float = 10.0) -> str | None:
    """The outcome of the first usage row for `endpoint`, once the batched log wrote it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r.outcome for r in usage_rows(gw) if r.endpoint == endpoint]
        if found:
            return found[0]
        time.sleep(0.1)
    return None


# The real command line: `serve --workers 2` names the protocol by import string ---------------


def test_serve_with_workers_applies_the_deadlines(tmp_path: Path, emulator_url: str) -> None:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    sandbox = Sandbox(home.resolve(), cwd.resolve())
    account = make_account(emulator_url, tmp_path / "login")
    port = free_port()
    env = emulator_env(emulator_url, account) | {"KI2API_IDLE_TIMEOUT_S": "1"}
    with running(sandbox, "serve", "--port", str(port), "--workers", "2", **env) as proc:
        proc.wait_for("/health", lambda: get_ok(f"http://127.0.0.1:{port}/health"))
        socks: list[socket.socket] = []
        try:
            for _ in range(4):  # the kernel spreads them over both workers
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            for s in socks:
                assert read_until_closed(s, 1.0 + SLACK_S) == b""
        finally:
            for s in socks:
                s.close()
