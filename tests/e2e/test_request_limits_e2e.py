"""Requests shaped as real clients send them, end to end: official SDKs -> gateway (uvicorn) ->
emulator. An 880 KB request holding one ~840 KB PNG goes through (real Kiro accepted 883,531
bytes with an 841 KB base64 PNG, docs/kiro-protocol.md §3.9); images over the image cap and more
tools than Kiro takes are a 400 in the client's dialect before anything is sent."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from ki2api.kiro.endpoint import KIRO_VERSION
from ki2api.kiro.request.budget import DEFAULT_MAX_TOOLS
from tests.conftest import Gateway
from tests.unit.test_request_limits import BIG_PNG

MODEL = "claude-sonnet-4-6"
TEXT = "Describe this picture. " + "context " * 5_300  # ~42 KB of text beside the image


def chat_calls(gw: Gateway) -> list[dict[str, Any]]:
    return [r for r in gw.emulator_requests() if r["path"].endswith("generateAssistantResponse")]


def openai_image_message() -> Any:
    return {
        "role": "user",
        "content": [
            {"type": "text", "text": TEXT},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{BIG_PNG}"}},
        ],
    }


def anthropic_image_message() -> Any:
    return {
        "role": "user",
        "content": [
            {"type": "text", "text": TEXT},
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": BIG_PNG},
            },
        ],
    }


def assert_image_arrived(gw: Gateway) -> None:
    (call,) = chat_calls(gw)
    assert call["status"] == 200, call["rejected"]
    assert call["body_bytes"] > 880_000
    images = call["body"]["conversationState"]["currentMessage"]["userInputMessage"]["images"]
    assert images == [{"format": "png", "source": {"bytes": BIG_PNG}}]
    assert f"KiroIDE-{KIRO_VERSION}-" in call["headers"]["user-agent"]


def test_openai_sends_an_880_kb_request_with_one_large_image(gateway: Gateway) -> None:
    reply = gateway.openai().chat.completions.create(model=MODEL, messages=[openai_image_message()])
    assert reply.choices[0].message.content
    assert_image_arrived(gateway)


def test_anthropic_sends_an_880_kb_request_with_one_large_image(gateway: Gateway) -> None:
    reply = gateway.anthropic().messages.create(
        model=MODEL, max_tokens=256, messages=[anthropic_image_message()]
    )
    assert reply.content
    assert_image_arrived(gateway)


def test_images_over_the_cap_are_a_400_in_each_dialect(gateway_factory: Any) -> None:
    gw: Gateway = gateway_factory(max_image_bytes_per_request=500_000)
    with pytest.raises(openai.BadRequestError) as oai:
        gw.openai().chat.completions.create(model=MODEL, messages=[openai_image_message()])
    assert oai.value.code == "images_too_large"
    assert "500,000" in oai.value.message
    with pytest.raises(anthropic.BadRequestError) as ant:
        gw.anthropic().messages.create(
            model=MODEL, max_tokens=256, messages=[anthropic_image_message()]
        )
    assert ant.value.status_code == 400
    assert ant.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "500,000" in ant.value.message
    assert chat_calls(gw) == []  # nothing reached Kiro


def openai_tools(n: int) -> Any:
    return [
        {
            "type": "function",
            "function": {
                "name": f"tool_{i}",
                "description": f"Tool number {i}.",
                "parameters": {"type": "object", "properties": {}},
            },
        }
        for i in range(n)
    ]


def anthropic_tools(n: int) -> Any:
    return [
        {
            "name": f"tool_{i}",
            "description": f"Tool number {i}.",
            "input_schema": {"type": "object", "properties": {}},
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_too_many_tools_is_a_400_before_kiro(gateway: Gateway, stream: bool) -> None:
    over = DEFAULT_MAX_TOOLS + 1
    messages: Any = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as oai:
        gateway.openai().chat.completions.create(
            model=MODEL, messages=messages, tools=openai_tools(over), stream=stream
        )
    assert oai.value.code == "too_many_tools" and oai.value.param == "tools"
    assert f"offers {over}" in oai.value.message
    assert f"at most {DEFAULT_MAX_TOOLS}" in oai.value.message
    with pytest.raises(anthropic.BadRequestError) as ant:
        gateway.anthropic().messages.create(
            model=MODEL,
            max_tokens=64,
            messages=messages,
            tools=anthropic_tools(over),
            stream=stream,
        )
    assert ant.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert f"offers {over}" in ant.value.message
    assert f"at most {DEFAULT_MAX_TOOLS}" in ant.value.message
    assert chat_calls(gateway) == []  # nothing reached Kiro


def test_as_many_tools_as_kiro_takes_are_sent(gateway: Gateway) -> None:
    reply = gateway.anthropic().messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "hi"}],
        tools=anthropic_tools(DEFAULT_MAX_TOOLS),
    )
    assert reply.content
    (call,) = chat_calls(gateway)
    assert call["status"] == 200, call["rejected"]
    context = call["body"]["conversationState"]["currentMessage"]["userInputMessage"]
    assert len(context["userInputMessageContext"]["tools"]) == DEFAULT_MAX_TOOLS
