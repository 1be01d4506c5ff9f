"""Issue 5 §4 end to end: an upstream stream that breaks after the client got text ends with an
error event in the client's dialect, never with a normal finish.

One account per test (nothing to fail over to, and once text went out nothing may be retried):
a stream cut in the middle of a frame, one whose tool call never got its stop frame, and one
that stalls longer than the idle read timeout. A stream that ends cleanly without its closing
events is, on the contrary, a complete answer (real 2025 answers had none): see the end. Raw
httpx checks the wire; the official SDKs (strict) must raise rather than return a normal
completion. Each test checks that the emulator served exactly one stream for it: the gateway
did not quietly retry after sending text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import API_KEY, Gateway, make_account

OPENAI_MODEL = "claude-sonnet-4-20250514"
ANTHROPIC_MODEL = "claude-sonnet-4-6"
OPENAI_AUTH = {"Authorization": f"Bearer {API_KEY}"}
ANTHROPIC_AUTH = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}

# (id, account behaviour, directive in the message, gateway settings). The events come 30 ms
# apart, so the break reaches the gateway after the first content (a break that arrives with
# it is retried before anything is sent: see test_pool_failover / test_fault_soak).
PACED = {"delay_ms": 30}
BREAKS: list[tuple[str, dict[str, Any], dict[str, Any] | None, dict[str, Any]]] = [
    ("cut mid-frame (directive)", {}, {"truncate_after_events": 3, **PACED}, {}),
    ("cut mid-frame (account)", {"truncate_after_events": 3}, PACED, {}),
    (
        "tool call without its stop frame",
        {},
        {
            "text": "Looking it up.",
            "tool_calls": [{"name": "lookup", "input": {"q": "x"}, "no_stop": True}],
            **PACED,
        },
        {},
    ),
    (
        "idle stall past read timeout",
        {"stall_after_events": {"events": 2, "ms": 4000}},
        None,
        {"read_timeout_s": 1.0, "keepalive_interval_s": 0.2},
    ),
]
IDS = [b[0] for b in BREAKS]


def content(directive: dict[str, Any] | None) -> str:
    text = "tell me a long story"
    return text if directive is None else f"{text}<emu>{json.dumps(directive)}</emu>"


def broken_gateway(
    emulator_url: str, tmp_path: Path, gateway_factory: Any, behaviour: dict[str, Any], **kw: Any
) -> Gateway:
    acct = make_account(emulator_url, tmp_path, **behaviour)
    gw: Gateway = gateway_factory(acct, **kw)
    return gw


def served_once(gw: Gateway, times: int = 1) -> None:
    stats = gw.emulator_stats()
    assert stats["chat_requests"] == times and stats["served"] == times, stats


def sse_events(lines: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs of an Anthropic SSE body."""
    out: list[tuple[str, dict[str, Any]]] = []
    name = ""
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            out.append((name, json.loads(line[6:])))
    return out


@pytest.mark.parametrize(("name", "behaviour", "directive", "settings"), BREAKS, ids=IDS)
def test_openai_stream_ends_with_error_not_finish(
    emulator_url: str,
    tmp_path: Path,
    gateway_factory: Any,
    name: str,
    behaviour: dict[str, Any],
    directive: dict[str, Any] | None,
    settings: dict[str, Any],
) -> None:
    gw = broken_gateway(emulator_url, tmp_path, gateway_factory, behaviour, **settings)
    body = {
        "model": OPENAI_MODEL,
        "stream": True,
        "messages": [{"role": "user", "content": content(directive)}],
    }
    with httpx.stream(
        "POST", f"{gw.url}/v1/chat/completions", json=body, headers=OPENAI_AUTH, timeout=30
    ) as r:
        assert r.status_code == 200
        lines = list(r.iter_lines())
    data = [line[6:] for line in lines if line.startswith("data: ")]
    assert "[DONE]" not in data, data[-3:]
    last = json.loads(data[-1])
    assert set(last) == {"error"} and set(last["error"]) == {"message", "type", "param", "code"}
    chunks = [json.loads(d) for d in data[:-1]]
    assert any(c["choices"] and c["choices"][0]["delta"].get("content") for c in chunks)
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks if c["choices"])
    if "stall" in name:
        assert any(line.startswith(":") for line in lines)  # keep-alives while it was silent
    served_once(gw)


@pytest.mark.parametrize(("name", "behaviour", "directive", "settings"), BREAKS, ids=IDS)
def test_anthropic_stream_ends_with_error_not_message_stop(
    emulator_url: str,
    tmp_path: Path,
    gateway_factory: Any,
    name: str,
    behaviour: dict[str, Any],
    directive: dict[str, Any] | None,
    settings: dict[str, Any],
) -> None:
    gw = broken_gateway(emulator_url, tmp_path, gateway_factory, behaviour, **settings)
    body = {
        "model": ANTHROPIC_MODEL,
        "max_tokens": 500,
        "stream": True,
        "messages": [{"role": "user", "content": content(directive)}],
    }
    with httpx.stream(
        "POST", f"{gw.url}/v1/messages", json=body, headers=ANTHROPIC_AUTH, timeout=30
    ) as r:
        assert r.status_code == 200
        events = sse_events(list(r.iter_lines()))
    names = [n for n, _ in events]
    assert names[-1] == "error", names
    assert "message_stop" not in names, names
    last = events[-1][1]
    assert last["type"] == "error" and last["error"]["type"] and last["error"]["message"]
    assert any(
        n == "content_block_delta" and d["delta"].get("type") == "text_delta" and d["delta"]["text"]
        for n, d in events
    )
    stops = [d["delta"].get("stop_reason") for n, d in events if n == "message_delta"]
    assert all(s not in ("end_turn", "max_tokens", "stop_sequence") for s in stops), stops
    served_once(gw)


@pytest.mark.parametrize(("name", "behaviour", "directive", "settings"), BREAKS, ids=IDS)
def test_openai_sdk_raises_on_a_broken_stream(
    emulator_url: str,
    tmp_path: Path,
    gateway_factory: Any,
    name: str,
    behaviour: dict[str, Any],
    directive: dict[str, Any] | None,
    settings: dict[str, Any],
) -> None:
    gw = broken_gateway(emulator_url, tmp_path, gateway_factory, behaviour, **settings)
    texts: list[str] = []
    with pytest.raises(openai.APIError):
        for chunk in gw.openai(timeout=30).chat.completions.create(
            model=OPENAI_MODEL,
            messages=[{"role": "user", "content": content(directive)}],
            stream=True,
        ):
            if chunk.choices:
                assert chunk.choices[0].finish_reason is None
                texts.append(chunk.choices[0].delta.content or "")
    assert "".join(texts)  # text had reached the client before the break
    served_once(gw)


@pytest.mark.parametrize(("name", "behaviour", "directive", "settings"), BREAKS, ids=IDS)
def test_anthropic_sdk_raises_on_a_broken_stream(
    emulator_url: str,
    tmp_path: Path,
    gateway_factory: Any,
    name: str,
    behaviour: dict[str, Any],
    directive: dict[str, Any] | None,
    settings: dict[str, Any],
) -> None:
    gw = broken_gateway(emulator_url, tmp_path, gateway_factory, behaviour, **settings)
    seen: list[str] = []
    with pytest.raises(anthropic.APIError):
        for ev in gw.anthropic(timeout=30).messages.create(
            model=ANTHROPIC_MODEL,
            max_tokens=500,
            messages=[{"role": "user", "content": content(directive)}],
            stream=True,
        ):
            seen.append(ev.type)
    assert "content_block_delta" in seen and "message_stop" not in seen, seen
    served_once(gw)


@pytest.mark.parametrize(("name", "behaviour", "directive", "settings"), BREAKS, ids=IDS)
@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_non_streaming_request_on_a_broken_stream_is_an_error(
    emulator_url: str,
    tmp_path: Path,
    gateway_factory: Any,
    name: str,
    behaviour: dict[str, Any],
    directive: dict[str, Any] | None,
    settings: dict[str, Any],
    dialect: str,
) -> None:
    gw = broken_gateway(emulator_url, tmp_path, gateway_factory, behaviour, **settings)
    messages: Any = [{"role": "user", "content": content(directive)}]
    if dialect == "openai":
        with pytest.raises(openai.APIStatusError) as o_info:
            gw.openai(timeout=30).chat.completions.create(model=OPENAI_MODEL, messages=messages)
        status = o_info.value.status_code
    else:
        with pytest.raises(anthropic.APIStatusError) as a_info:
            gw.anthropic(timeout=30).messages.create(
                model=ANTHROPIC_MODEL, max_tokens=500, messages=messages
            )
        status = a_info.value.status_code
    assert status >= 500
    # read whole before anything is sent: a pool of one tries a passing fault twice; a tool
    # input cut off is the request's fault (any try would be cut): once
    served_once(gw, 1 if "tool call" in name else 2)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "plain"])
@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_a_clean_end_without_closing_events_is_a_normal_finish(
    emulator_url: str, tmp_path: Path, gateway_factory: Any, stream: bool, dialect: str
) -> None:
    """Real 2025 answers carried no metering / context-usage events: a body that ended cleanly
    is complete, in both dialects, streamed or not (the SDKs return a normal completion)."""
    gw = broken_gateway(emulator_url, tmp_path, gateway_factory, {"end_without_closing": True})
    messages: Any = [{"role": "user", "content": content(PACED)}]
    if dialect == "openai":
        if stream:
            chunks = list(
                gw.openai(timeout=30).chat.completions.create(
                    model=OPENAI_MODEL, messages=messages, stream=True
                )
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        else:
            reply = gw.openai(timeout=30).chat.completions.create(
                model=OPENAI_MODEL, messages=messages
            )
            text, finish = reply.choices[0].message.content or "", reply.choices[0].finish_reason
        assert finish == "stop"
    else:
        client = gw.anthropic(timeout=30)
        if stream:
            with client.messages.stream(
                model=ANTHROPIC_MODEL, max_tokens=500, messages=messages
            ) as events:
                final = events.get_final_message()
        else:
            final = client.messages.create(model=ANTHROPIC_MODEL, max_tokens=500, messages=messages)
        text = "".join(b.text for b in final.content if b.type == "text")
        assert final.stop_reason == "end_turn"
    assert text == "Echo: tell me a long story"
    served_once(gw)
