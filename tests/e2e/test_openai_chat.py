"""OpenAI surface end to end: official SDK (strict) -> gateway -> emulator, all on uvicorn."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from tests.conftest import API_KEY, Gateway
from tests.support.payloads import PNG_1X1, WEATHER_TOOL

MODEL = "claude-sonnet-4-20250514"


def emu(**directive: Any) -> str:
    return f"<emu>{json.dumps(directive)}</emu>"


def test_non_streaming_reply_validates_strictly(gateway: Gateway) -> None:
    client = gateway.openai()
    resp = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello there"}]
    )
    assert resp.object == "chat.completion"
    assert resp.id.startswith("chatcmpl-")
    assert resp.model == MODEL
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Echo: Hello there"
    assert choice.finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    assert resp.usage.prompt_tokens_details is not None
    sent = gateway.emulator_requests()[-1]["body"]
    current = sent["conversationState"]["currentMessage"]["userInputMessage"]
    assert current["modelId"] == "claude-sonnet-4"
    assert "Hello there" in current["content"]


def test_stream_accumulates_to_the_non_stream_result(gateway: Gateway) -> None:
    client = gateway.openai()
    messages: Any = [{"role": "user", "content": "stream me " + emu(chunks=6)}]
    whole = client.chat.completions.create(model=MODEL, messages=messages)
    state = ChatCompletionStreamState()
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, stream=True))
    for chunk in chunks:
        state.handle_chunk(chunk)
    final = state.get_final_completion()
    assert final.choices[0].message.content == whole.choices[0].message.content
    assert final.choices[0].message.role == "assistant"
    assert final.choices[0].finish_reason == "stop"
    roles = [c.choices[0].delta.role for c in chunks if c.choices and c.choices[0].delta.role]
    assert roles == ["assistant"]
    assert len({(c.id, c.created, c.model) for c in chunks}) == 1
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1])
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 6


def raw_sse(gateway: Gateway, body: dict[str, Any]) -> tuple[httpx.Response, list[str]]:
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    ) as r:
        lines = [line for line in r.iter_lines()]
    return r, lines


def test_stream_wire_format_and_usage_chunk(gateway: Gateway) -> None:
    body = {
        "model": MODEL,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}],
    }
    r, lines = raw_sse(gateway, body)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers.get("x-request-id")
    events = [line for line in lines if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    usage_chunks = [c for c in chunks if c["choices"] == []]
    assert len(usage_chunks) == 1 and chunks[-1] is usage_chunks[0]
    assert usage_chunks[0]["usage"]["total_tokens"] > 0
    assert all(c["usage"] is None for c in chunks[:-1])


def test_stream_without_include_usage_has_no_empty_choices(gateway: Gateway) -> None:
    r, lines = raw_sse(
        gateway,
        {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    )
    chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert chunks and all(c["choices"] for c in chunks)


def test_system_developer_and_text_parts_are_accepted(gateway: Gateway) -> None:
    client = gateway.openai()
    resp = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": [{"type": "text", "text": "What is up?"}]},
        ],
    )
    assert resp.choices[0].message.content
    sent = json.dumps(gateway.emulator_requests()[-1]["body"])
    assert "Be brief." in sent and "Answer in English." in sent


def test_multi_turn_history_reaches_kiro_alternating(gateway: Gateway) -> None:
    client = gateway.openai()
    client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "assistant", "content": "I start."},
            {"role": "user", "content": "one"},
            {"role": "user", "content": "two"},
            {"role": "assistant", "content": "ok"},
            {"role": "assistant", "content": "more"},
            {"role": "user", "content": "three"},
        ],
    )
    history = gateway.emulator_requests()[-1]["body"]["conversationState"]["history"]
    kinds = [next(iter(h)) for h in history]
    assert kinds[0] == "userInputMessage"
    assert all(a != b for a, b in zip(kinds, kinds[1:], strict=False))
    assert kinds[-1] == "assistantResponseMessage"


def test_sampling_params_and_unknown_fields_are_accepted(gateway: Gateway) -> None:
    client = gateway.openai()
    resp = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        temperature=2,
        top_p=0.5,
        seed=7,
        user="u1",
        metadata={"a": "b"},
        logit_bias={"50256": -100},
        presence_penalty=0.5,
        frequency_penalty=0.5,
        reasoning_effort="low",
        max_tokens=100,
        extra_body={"top_k": 5, "some_vendor_field": {"x": 1}},
    )
    assert resp.choices[0].message.content == "Echo: hi"


def test_models_list_and_retrieve(gateway: Gateway) -> None:
    client = gateway.openai()
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids and "claude-sonnet-4-5" in ids
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("gpt-nonexistent")
    assert info.value.code == "model_not_found"


def test_health_shows_state_without_secrets(gateway: Gateway) -> None:
    r = httpx.get(f"{gateway.url}/health")
    assert r.status_code == 200
    data = r.json()
    assert data["status"] == "ok" and data["version"]
    token = json.loads(gateway.account.token_file.read_text())
    assert token["accessToken"] not in r.text and token["refreshToken"] not in r.text
    # without a key: counts only; with one: each account's state (still no secret)
    assert data["accounts"] == {"total": 1, "usable": 1} and "pool" not in data
    assert not {"pid", "upstream", "problem"} & set(data)  # nothing about the deployment
    assert str(gateway.account.token_file) not in r.text
    detailed = httpx.get(f"{gateway.url}/health", headers={"x-api-key": API_KEY})
    pool = detailed.json()["pool"]
    assert detailed.json()["upstream"] == gateway.emulator_url and detailed.json()["pid"]
    assert [a["id"] for a in pool] == ["default"] and pool[0]["enabled"] is True
    assert token["accessToken"] not in detailed.text and token["refreshToken"] not in detailed.text


def test_response_headers(gateway: Gateway) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert r.status_code == 200
    assert r.headers["x-request-id"].startswith("req_")
    assert int(r.headers["openai-processing-ms"]) >= 0
    assert r.headers["content-type"].startswith("application/json")


def test_data_url_image_reaches_kiro_as_an_image(gateway: Gateway) -> None:
    client = gateway.openai()
    resp = client.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_1X1}"}},
                ],
            }
        ],
    )
    assert resp.choices[0].message.content
    current = gateway.emulator_requests()[-1]["body"]["conversationState"]["currentMessage"]
    images = current["userInputMessage"]["images"]
    assert images[0]["format"] == "png"


def test_tool_call_round_trip(gateway: Gateway) -> None:
    client = gateway.openai()
    tools: Any = [WEATHER_TOOL]
    first = client.chat.completions.create(
        model=MODEL, tools=tools, messages=[{"role": "user", "content": "call get_weather"}]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments), dict)
    follow = client.chat.completions.create(
        model=MODEL,
        tools=tools,
        messages=[
            {"role": "user", "content": "call get_weather"},
            choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"},
            {"role": "user", "content": "thanks"},
        ],
    )
    assert follow.choices[0].message.content == "Echo: thanks"
    history = gateway.emulator_requests()[-1]["body"]["conversationState"]["history"]
    uses = history[1]["assistantResponseMessage"]["toolUses"]
    assert uses[0]["toolUseId"] == call.id
