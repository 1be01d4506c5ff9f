"""Anthropic error paths end to end (AN-17, AN-18, AN-19): real statuses before the first byte,
one `event: error` after it, pings in silence, the compaction wording for over-long prompts."""

from __future__ import annotations

import json
import re
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import API_KEY, Gateway

MODEL = "claude-sonnet-4-6"
KEY = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}


def emu(**directive: Any) -> str:
    return f"<emu>{json.dumps(directive)}</emu>"


def body(content: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": content}],
        **extra,
    }


UPSTREAM = [
    # (name, upstream error, status, error.type, SDK class, header checks)
    (
        "throttled",
        {"status": 429, "body": {"message": "busy", "reason": "INSUFFICIENT_MODEL_CAPACITY"}},
        429,
        "rate_limit_error",
        anthropic.RateLimitError,
        {"retry-after": re.compile(r"\d+")},
    ),
    (
        "quota",
        {"status": 402, "body": {"message": "limit", "reason": "MONTHLY_REQUEST_COUNT"}},
        429,
        "rate_limit_error",
        anthropic.RateLimitError,
        {"x-should-retry": re.compile("false")},
    ),
    (
        "overloaded",
        {"status": 503, "body": {"__type": "ServiceUnavailableException", "message": "down"}},
        529,
        "overloaded_error",
        anthropic.InternalServerError,
        {},
    ),
    (
        "suspended",
        {"status": 403, "body": {"message": "suspended", "reason": "TEMPORARILY_SUSPENDED"}},
        403,
        "permission_error",
        anthropic.PermissionDeniedError,
        {},
    ),
]


@pytest.mark.parametrize(
    ("error", "status", "etype", "exc", "headers"),
    [u[1:] for u in UPSTREAM],
    ids=[u[0] for u in UPSTREAM],
)
@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_upstream_error_before_first_byte(
    gateway: Gateway,
    error: dict[str, Any],
    status: int,
    etype: str,
    exc: type[Exception],
    headers: dict[str, re.Pattern[str]],
    stream: bool,
) -> None:
    payload = body("x" + emu(error=error), stream=stream)
    r = httpx.post(f"{gateway.url}/v1/messages", json=payload, headers=KEY)
    assert r.status_code == status, r.text
    data = r.json()
    assert data["type"] == "error" and data["error"]["type"] == etype
    assert data["error"]["message"] and data["request_id"].startswith("req_")
    for name, pattern in headers.items():
        assert pattern.fullmatch(r.headers[name])
    suspended = etype == "permission_error"
    if suspended:  # the pool disabled its only account: the next request says so
        exc = anthropic.InternalServerError
    with pytest.raises(exc) as caught:
        gateway.anthropic().messages.create(**{k: v for k, v in payload.items() if k != "stream"})
    if suspended:
        assert "disabled (1 suspended)" in str(caught.value)


def test_mid_stream_error_is_one_error_event(gateway: Gateway) -> None:
    content = "x" + emu(
        text="a b c d e f g h",
        chunks=8,
        delay_ms=30,  # the exception comes after the first content has been sent
        exception={"type": "ThrottlingException", "message": "Too many", "after_events": 3},
    )
    with httpx.stream(
        "POST", f"{gateway.url}/v1/messages", json=body(content, stream=True), headers=KEY
    ) as r:
        assert r.status_code == 200
        raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert events[0].startswith("event: message_start")
    assert events[-1].startswith("event: error\n")
    last = json.loads(events[-1].split("data: ", 1)[1])
    assert last["type"] == "error" and set(last["error"]) == {"type", "message"}
    assert "message_stop" not in raw and "message_delta" not in raw
    with (
        pytest.raises(anthropic.APIStatusError),
        gateway.anthropic().messages.stream(
            model=MODEL, max_tokens=100, messages=[{"role": "user", "content": content}]
        ) as s,
    ):
        s.get_final_message()


def test_ping_during_upstream_silence(gateway_factory: Any) -> None:
    gw: Gateway = gateway_factory(keepalive_interval_s=0.2)
    content = "x" + emu(text="slow answer", chunks=2, delay_ms=900)
    with httpx.stream(
        "POST", f"{gw.url}/v1/messages", json=body(content, stream=True), headers=KEY
    ) as r:
        raw = r.read().decode()
    assert 'event: ping\ndata: {"type":"ping"}\n\n' in raw
    assert raw.index("event: ping") > raw.index("event: message_start")
    assert raw.rstrip().endswith('{"type":"message_stop"}')
    with gw.anthropic().messages.stream(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": content}]
    ) as s:
        assert s.get_final_message().content[0].text == "slow answer"  # type: ignore[union-attr]


def test_context_overflow_uses_the_compaction_wording(gateway_factory: Any) -> None:
    gw: Gateway = gateway_factory(max_upstream_bytes=20_000)
    client = gw.anthropic()
    messages: Any = [{"role": "user", "content": "word " * 10_000}]
    for stream in (False, True):
        with pytest.raises(anthropic.BadRequestError) as info:
            if stream:
                with client.messages.stream(model=MODEL, max_tokens=100, messages=messages) as s:
                    s.get_final_message()
            else:
                client.messages.create(model=MODEL, max_tokens=100, messages=messages)
        message = info.value.body["error"]["message"]  # type: ignore[index]
        match = re.fullmatch(r"prompt is too long: (\d+) tokens > (\d+) maximum", message)
        assert match, message
        counted = client.messages.count_tokens(model=MODEL, messages=messages).input_tokens
        assert int(match[2]) == 1_000_000  # claude-sonnet-4-6's window
        assert int(match[1]) > int(match[2]) and int(match[1]) >= counted
    assert not [
        r for r in gw.emulator_requests() if r["path"].endswith("generateAssistantResponse")
    ]


def test_errors_on_anthropic_paths_use_the_anthropic_shape(gateway: Gateway) -> None:
    r = httpx.get(f"{gateway.url}/v1/messages", headers=KEY)
    assert r.status_code == 405 and r.json()["type"] == "error"
    r = httpx.get(f"{gateway.url}/v1/messages/nothing", headers=KEY)
    assert r.status_code in (404, 405) and r.json()["type"] == "error"
    r = httpx.post(f"{gateway.url}/v1/messages", content=b"{nope", headers=KEY)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    # the OpenAI surface keeps its own dialect
    r = httpx.get(f"{gateway.url}/v1/nothing", headers=KEY)
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_models_errors_follow_the_client(gateway: Gateway) -> None:
    """/v1/models is shared: Anthropic clients (x-api-key or anthropic-version) get Anthropic's
    error shape, OpenAI clients (Bearer) OpenAI's."""
    for headers in ({"x-api-key": "wrong"}, {"anthropic-version": "2023-06-01"}):
        r = httpx.get(f"{gateway.url}/v1/models", headers=headers)
        assert r.status_code == 401 and r.json()["type"] == "error"
    r = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": "Bearer wrong"})
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
