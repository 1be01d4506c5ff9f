"""The Anthropic surface end to end: official anthropic SDK (strict) -> gateway -> emulator.

Covers docs/api-compat.md §B.10 AN-1..AN-14, AN-16, AN-20..AN-22 for the Messages surface.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import API_KEY, Gateway

MODEL = "claude-sonnet-4-6"
KEY = {"x-api-key": API_KEY}
TOOLS: Any = [
    {
        "name": "get_weather",
        "description": "The weather in a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


def emu(**directive: Any) -> str:
    return f"<emu>{json.dumps(directive)}</emu>"


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def sse_events(r: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    name = None
    for line in r.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
            assert name == data["type"]  # AN-7: every event has its event line
            out.append((name, data))
            name = None
    return out


def comparable(message: Any) -> dict[str, Any]:
    """A Message as data, without the per-request ids."""
    data = message.model_dump(exclude={"id"})
    for block in data["content"]:
        block.pop("id", None)
        block.pop("parsed_output", None)
    return dict(data)


def chat_requests(gateway: Gateway) -> list[dict[str, Any]]:
    return [
        r for r in gateway.emulator_requests() if r["path"].endswith("generateAssistantResponse")
    ]


# --- AN-1, AN-5, AN-6, AN-8: non-stream and stream agree ----------------------------------


@pytest.mark.parametrize(
    ("content", "tools"),
    [("hello there", None), ("call get_weather", TOOLS)],
    ids=["text", "tool use"],
)
def test_stream_final_message_equals_non_stream(gateway: Gateway, content: str, tools: Any) -> None:
    client = gateway.anthropic()
    kwargs: dict[str, Any] = {"model": MODEL, "max_tokens": 1000, "messages": user(content)}
    if tools:
        kwargs["tools"] = tools
    message = client.messages.create(**kwargs)
    with client.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    assert message.id.startswith("msg_") and final.id.startswith("msg_")
    assert comparable(final) == comparable(message)
    usage = message.model_dump()["usage"]
    for key in ("input_tokens", "output_tokens", "cache_creation_input_tokens"):
        assert isinstance(usage[key], int)
    assert usage["cache_read_input_tokens"] == 0
    if tools:
        assert message.stop_reason == "tool_use"
        block = message.content[0]
        assert block.type == "tool_use" and block.name == "get_weather"
        assert block.id.startswith(("toolu", "tooluse"))
        assert block.input == {"city": "x"} or isinstance(block.input, dict)
    else:
        assert message.stop_reason == "end_turn"
        assert message.content[0].type == "text" and "hello there" in message.content[0].text


def test_beta_query_and_raw_stream_shape(gateway: Gateway) -> None:
    """AN-1, AN-3, AN-7, AN-8, AN-10: ?beta=true, no anthropic-version, unknown betas."""
    body = {"model": MODEL, "max_tokens": 500, "stream": True, "tools": TOOLS}
    body["messages"] = user("call get_weather")
    headers = {**KEY, "anthropic-beta": "made-up-2099-01-01,context-1m-2025-08-07"}
    url = f"{gateway.url}/v1/messages?beta=true"
    with httpx.stream("POST", url, json=body, headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    open_index = None
    next_index = 0
    partial = ""
    for name, data in events[1:-2]:
        if name == "content_block_start":
            assert open_index is None and data["index"] == next_index
            open_index = data["index"]
            assert data["content_block"]["input"] == {}
            assert {"id", "name"} <= set(data["content_block"])
        elif name == "content_block_delta":
            assert data["index"] == open_index
            partial += data["delta"]["partial_json"]
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index, next_index = None, next_index + 1
    assert json.loads(partial) == {"city": "x"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"]["output_tokens"] > 0
    # non-stream with ?beta=true too
    body["stream"] = False
    r2 = httpx.post(url, json=body, headers=headers)
    assert r2.status_code == 200 and r2.json()["type"] == "message"


# --- AN-2: auth -----------------------------------------------------------------------------


def test_auth_both_ways(gateway: Gateway) -> None:
    for client in (gateway.anthropic(), gateway.anthropic(auth_token=API_KEY)):
        m = client.messages.create(model=MODEL, max_tokens=50, messages=user("hi"))
        assert m.content[0].type == "text"


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-api-key": "wrong"}, {"authorization": "Bearer wrong"}],
    ids=["none", "bad x-api-key", "bad bearer"],
)
def test_bad_auth_is_401_anthropic_json(gateway: Gateway, headers: dict[str, str]) -> None:
    body = {"model": MODEL, "max_tokens": 5, "messages": user("x")}
    r = httpx.post(f"{gateway.url}/v1/messages", json=body, headers=headers)
    assert r.status_code == 401
    data = r.json()
    assert data["type"] == "error" and data["error"]["type"] == "authentication_error"
    assert data["request_id"] == r.headers["request-id"]
    with pytest.raises(anthropic.AuthenticationError):
        gateway.anthropic(api_key="wrong").messages.create(**body)


# --- AN-4: validation ----------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["max_tokens", "messages", "model"])
def test_missing_required_field_is_400(gateway: Gateway, missing: str) -> None:
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 5, "messages": user("x")}
    del body[missing]
    r = httpx.post(f"{gateway.url}/v1/messages", json=body, headers=KEY)
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert missing in r.json()["error"]["message"]


def test_unknown_model_is_404_not_found_error(gateway: Gateway) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        gateway.anthropic().messages.create(model="nope-1", max_tokens=5, messages=user("x"))
    assert info.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


# --- AN-11, AN-12, AN-13, AN-16: what Claude Code sends --------------------------------------


def test_claude_code_shaped_request(gateway: Gateway) -> None:
    client = gateway.anthropic(default_headers={"anthropic-beta": "claude-code-20250219,x-1"})
    with client.messages.stream(
        model=MODEL,
        max_tokens=32000,
        system=[
            {"type": "text", "text": "x-anthropic-billing-header: cc"},
            {"type": "text", "text": "SYSTEM-MARKER", "cache_control": {"type": "ephemeral"}},
        ],
        messages=[
            {"role": "system", "content": "ROLE-SYSTEM-MARKER"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}],
            },
        ],
        tools=[*TOOLS, {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        thinking={"type": "adaptive"},
        metadata={"user_id": '{"device_id":"d"}'},
        extra_body={
            "top_k": 5,
            "service_tier": "auto",
            "output_config": {"effort": "medium"},
            "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
            "brand_new_field": True,
        },
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn"
    sent = json.dumps(chat_requests(gateway)[-1])
    assert "SYSTEM-MARKER" in sent and "ROLE-SYSTEM-MARKER" in sent
    assert "web_search" not in sent  # the server tool is not sent to Kiro (yet)


@pytest.mark.parametrize(
    "choice",
    [{"type": "auto"}, {"type": "any"}, {"type": "tool", "name": "get_weather"}, {"type": "none"}],
    ids=["auto", "any", "tool", "none"],
)
def test_tool_choice_accepted(gateway: Gateway, choice: Any) -> None:
    m = gateway.anthropic().messages.create(
        model=MODEL,
        max_tokens=200,
        tools=TOOLS,
        tool_choice=choice,
        messages=user("call get_weather"),
    )
    assert m.stop_reason in ("tool_use", "end_turn")


def test_tool_round_trip_with_result_blocks(gateway: Gateway) -> None:
    client = gateway.anthropic()
    first = client.messages.create(
        model=MODEL,
        max_tokens=200,
        tools=TOOLS,
        messages=user("call get_weather"),
    )
    uses = [b for b in first.content if b.type == "tool_use"]
    assert uses
    history: list[Any] = [
        *user("call get_weather"),
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": uses[0].id, "content": "RESULT-STRING"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_x", "name": "get_weather", "input": {"city": "y"}}
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_x",
                    "is_error": True,
                    "content": [{"type": "text", "text": "RESULT-BLOCK-ERROR"}],
                },
                {"type": "text", "text": "now answer"},
            ],
        },
    ]
    second = client.messages.create(model=MODEL, max_tokens=200, tools=TOOLS, messages=history)
    assert second.content and second.content[0].type == "text"
    sent = json.dumps(chat_requests(gateway)[-1])
    assert "RESULT-STRING" in sent and "RESULT-BLOCK-ERROR" in sent
    assert '"error"' in sent  # is_error -> status error


def test_images_base64(gateway: Gateway) -> None:
    from tests.support.payloads import PNG_1X1

    m = gateway.anthropic().messages.create(
        model=MODEL,
        max_tokens=50,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG_1X1},
                    },
                    {"type": "text", "text": "what is this"},
                ],
            }
        ],
    )
    assert m.content[0].type == "text"
    assert "images" in json.dumps(chat_requests(gateway)[-1])


def test_pdf_document_is_a_clear_400(gateway: Gateway) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        gateway.anthropic().messages.create(
            model=MODEL,
            max_tokens=50,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {
                                "type": "base64",
                                "media_type": "application/pdf",
                                "data": "JVBERi0=",
                            },
                        },
                    ],
                }
            ],
        )
    assert "PDF" in str(info.value)


# --- stop_sequences and max_tokens ----------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_stop_sequence(gateway: Gateway, stream: bool) -> None:
    client = gateway.anthropic()
    kwargs: Any = {
        "model": MODEL,
        "max_tokens": 500,
        "stop_sequences": ["HALT", "NEVER"],
        "messages": user("go" + emu(text="one two HALT three", chunks=6)),
    }
    if stream:
        with client.messages.stream(**kwargs) as s:
            m = s.get_final_message()
    else:
        m = client.messages.create(**kwargs)
    assert (m.stop_reason, m.stop_sequence) == ("stop_sequence", "HALT")
    assert m.content[0].type == "text" and m.content[0].text == "one two "


def test_max_tokens(gateway: Gateway) -> None:
    m = gateway.anthropic().messages.create(
        model=MODEL, max_tokens=3, messages=user("go" + emu(text="word " * 200, chunks=20))
    )
    assert m.stop_reason == "max_tokens"
    assert m.usage.output_tokens <= 3


# --- AN-20, AN-21, AN-22 --------------------------------------------------------------------


def test_count_tokens(gateway: Gateway) -> None:
    client = gateway.anthropic()
    small = client.messages.count_tokens(model=MODEL, messages=user("hi"))
    big = client.messages.count_tokens(
        model=MODEL,
        system=[{"type": "text", "text": "S " * 500, "cache_control": {"type": "ephemeral"}}],
        tools=TOOLS,
        messages=[
            *user("hi"),
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}],
            },
        ],
        thinking={"type": "enabled", "budget_tokens": 2000},
    )
    assert 0 < small.input_tokens < big.input_tokens
    r = httpx.post(
        f"{gateway.url}/v1/messages/count_tokens?beta=true",
        json={"model": MODEL, "messages": user("hi")},
        headers=KEY,
    )
    assert r.json() == {"input_tokens": small.input_tokens}


def test_models_strict(gateway: Gateway) -> None:
    client = gateway.anthropic()
    page = client.models.list(limit=1000)
    assert page.data and all(m.type == "model" for m in page.data)
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("no-such-model")


def test_api_hello(gateway: Gateway) -> None:
    assert httpx.head(f"{gateway.url}/api/hello").status_code == 200
