"""Real streaming: incremental delivery, keep-alives, disconnect cancellation."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from tests.conftest import API_KEY, Gateway

MODEL = "claude-sonnet-4-20250514"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def emu(**directive: Any) -> str:
    return f"<emu>{json.dumps(directive)}</emu>"


def test_first_chunk_arrives_long_before_the_last(gateway: Gateway) -> None:
    # The emulator sleeps 300 ms between 6 events: the last event leaves it >= 1.5 s after
    # the first. A gateway that buffered would deliver them together.
    content = "slow" + emu(text="one two three four five six", chunks=6, delay_ms=300)
    client = gateway.openai()
    arrivals: list[float] = []
    for chunk in client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
    assert len(arrivals) == 6
    assert arrivals[-1] - arrivals[0] >= 1.0


def test_keepalive_comments_during_upstream_silence(gateway_factory: Any) -> None:
    gw: Gateway = gateway_factory(keepalive_interval_s=0.2)
    content = "wait" + emu(text="a b", chunks=2, delay_ms=1200)
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": content}]}
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=body, headers=AUTH) as r:
        lines = list(r.iter_lines())
    comments = [line for line in lines if line.startswith(":")]
    assert comments, lines
    assert lines[-2:] == ["data: [DONE]", ""] or lines[-1] == "data: [DONE]"


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_client_disconnect_cancels_upstream(gateway: Gateway) -> None:
    content = "long" + emu(text="x " * 50, chunks=50, delay_ms=200)
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": content}]}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, headers=AUTH) as r:
        lines = r.iter_lines()  # kept referenced: dropping it would close the connection early
        assert next(line for line in lines if line.startswith("data: {"))
        assert gateway.emulator_stats()["streams_now"] == 1
    # The client has gone: the gateway must close its upstream stream well before the
    # emulator would have finished (50 x 200 ms = 10 s).
    assert wait_for(lambda: gateway.emulator_stats()["streams_now"] == 0, timeout=5.0)
