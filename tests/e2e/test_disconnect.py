"""A client that goes away before its answer is ready stops the work done for it (issue 9).

Nothing is written to a client before the first content of a streamed answer, or before the
whole of a non-streaming one, so its disconnect used to go unnoticed: the upstream call ran on
for 20-30 s (spending the account's quota) and the usage row said `ok`. Now the route listens
for the disconnect while it waits: the upstream call is closed at once and the row says
`cancelled`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import httpx
import pytest

from tests.conftest import API_KEY, Gateway

MODEL = "claude-sonnet-4-20250514"


def _emu(**directive: Any) -> str:
    return f"take your time<emu>{json.dumps(directive)}</emu>"


def _rows(gw: Gateway) -> list[tuple[str, float]]:
    db = gw.settings.data_dir / "ki2api.sqlite3"
    with sqlite3.connect(db) as conn:
        return [
            (str(o), float(ms)) for o, ms in conn.execute("SELECT outcome, latency_ms FROM usage")
        ]


def _wait(probe: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.05)
    return probe()


def _leave_early(gw: Gateway, *, anthropic: bool, stream: bool, content: str) -> None:
    """Send the request and drop the connection after 0.4 s, with nothing received."""
    if anthropic:
        url, headers = "/v1/messages", {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
        body: dict[str, Any] = {"model": MODEL, "max_tokens": 100}
    else:
        url, headers = "/v1/chat/completions", {"authorization": f"Bearer {API_KEY}"}
        body = {"model": MODEL}
    body |= {"stream": stream, "messages": [{"role": "user", "content": content}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gw.url + url, json=body, headers=headers, timeout=httpx.Timeout(5, read=0.4))


@pytest.mark.parametrize("anthropic", [False, True], ids=["openai", "anthropic"])
def test_a_client_gone_before_the_first_byte_ends_the_upstream_call(
    gateway: Gateway, anthropic: bool
) -> None:
    """Streaming, and Kiro silent for 6 s before its first event: the row is written as
    `cancelled` long before that event would have come."""
    _leave_early(gateway, anthropic=anthropic, stream=True, content=_emu(first_delay_ms=6000))
    left = time.monotonic()
    rows = _wait(lambda: _rows(gateway), 4.0)
    assert rows == [("cancelled", pytest.approx(400, abs=3000))], rows
    assert time.monotonic() - left < 4.0  # not after Kiro's first event (6 s)


@pytest.mark.parametrize("anthropic", [False, True], ids=["openai", "anthropic"])
def test_a_client_gone_during_a_non_streaming_answer_ends_the_upstream_call(
    gateway: Gateway, anthropic: bool
) -> None:
    """Not streaming, and a 10 s answer (100 events 100 ms apart): the upstream stream closes
    and the row says `cancelled` at once, not when the answer would have been complete."""
    content = _emu(text="word " * 100, chunks=100, delay_ms=100)
    _leave_early(gateway, anthropic=anthropic, stream=False, content=content)
    assert _wait(lambda: gateway.emulator_stats()["streams_now"] == 0, 3.0), (
        gateway.emulator_stats()
    )
    rows = _wait(lambda: _rows(gateway), 3.0)
    assert [o for o, _ in rows] == ["cancelled"], rows
    stats = gateway.emulator_stats()
    assert stats["chat_requests"] == 1, stats  # the disconnect did not fail over either


def test_a_client_that_stays_gets_its_answer(gateway: Gateway) -> None:
    """The listening costs nothing to a client that waits: a slow non-streaming answer is
    complete, and its row says `ok`."""
    content = _emu(text="slow but sure", chunks=4, delay_ms=150, first_delay_ms=300)
    r = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": content}]},
        headers={"authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "slow but sure"
    assert [o for o, _ in _wait(lambda: _rows(gateway), 3.0)] == ["ok"]
