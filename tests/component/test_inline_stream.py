"""The inline SSE stream (server/inline_stream.py) under our server (server/http1.py), over a
real socket: keep-alives written by the ticker while the request's task waits on a silent
upstream, the idle limit ending the stream with the timeout error (never a finish), in-stream
errors, and the upstream closed however the stream ends.

The upstream is an async generator of batches driven by the test; the encoder writes each
event as `data: <event>` and knows the answer finished when it saw "END".
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.server.http1 import protocol_for
from ki2api.server.inline_stream import InlineSSEResponse, can_write_now
from ki2api.settings import load_settings
from tests.support.servers import lifespan_done, serve_in_thread

KEEPALIVE = b": ping\n\n"


class Encoder:
    def __init__(self) -> None:
        self.finished = False

    def feed(self, event: Any) -> bytes:
        self.finished = self.finished or event == "END"
        return f"data: {event}\n\n".encode()

    def feed_all(self, events: list[Any]) -> bytes:
        return b"".join(self.feed(event) for event in events)

    def error(self, err: GatewayError) -> bytes:
        return f"data: error {err.kind.value}\n\n".encode()


class Upstream:
    """Batches per scenario, and whether the generator was closed."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.scenario = ""

    async def batches(self) -> AsyncIterator[list[Any]]:
        try:
            if self.scenario == "normal":
                yield ["b"]
                await asyncio.sleep(0.3)  # silence: keep-alives meanwhile
                yield ["c", "END"]
            elif self.scenario == "stall":
                await asyncio.sleep(3600)
            elif self.scenario == "fails":
                yield ["b"]
                raise GatewayError(ErrorKind.UPSTREAM_PROTOCOL, "broken")
            elif self.scenario == "no finish":
                yield ["b"]
        finally:
            self.closed.set()


UPSTREAM = Upstream()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if await lifespan_done(scope, receive, send):
        return
    assert can_write_now(scope)
    response = InlineSSEResponse(
        UPSTREAM.batches(),
        ["a"],
        Encoder(),
        keepalive=KEEPALIVE,
        keepalive_s=0.1,
        idle_limit_s=0.6,
        trace=None,
    )
    await response(scope, receive, send)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    protocol = protocol_for(load_settings({}, dotenv=Path("/nonexistent/.env")))
    with serve_in_thread(app, http=protocol) as base:
        yield base


def stream(url: str, scenario: str) -> bytes:
    UPSTREAM.scenario = scenario
    UPSTREAM.closed.clear()
    with httpx.stream("GET", url, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        return b"".join(r.iter_raw())


def events(body: bytes) -> list[bytes]:
    return [piece for piece in body.split(b"\n\n") if piece and piece != b": ping"]


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("normal", [b"data: a", b"data: b", b"data: c", b"data: END"]),
        ("stall", [b"data: a", b"data: error upstream_timeout"]),
        ("fails", [b"data: a", b"data: b", b"data: error upstream_protocol"]),
        ("no finish", [b"data: a", b"data: b", b"data: error upstream_protocol"]),
    ],
)
def test_what_the_client_gets(url: str, scenario: str, expected: list[bytes]) -> None:
    body = stream(url, scenario)
    assert events(body) == expected
    assert UPSTREAM.closed.wait(5), "the upstream was not closed"


@pytest.mark.parametrize("scenario", ["normal", "stall"])
def test_keepalives_fill_the_silences(url: str, scenario: str) -> None:
    body = stream(url, scenario)
    assert body.count(KEEPALIVE) >= 2, body  # 0.3 s and 0.6 s of silence, one every 0.1 s


def test_a_client_gone_mid_stall_closes_the_upstream(url: str) -> None:
    UPSTREAM.scenario = "stall"
    UPSTREAM.closed.clear()
    with httpx.stream("GET", url, timeout=10) as r:
        first = next(r.iter_raw())
        assert first.startswith(b"data: a")
    assert UPSTREAM.closed.wait(5), "the upstream was not closed when the client went"
