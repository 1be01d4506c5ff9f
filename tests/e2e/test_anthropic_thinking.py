"""Thinking through the Anthropic surface: blocks, signatures, and across tool rounds; as text
tags for a model without native fields (claude-haiku-4-5), as `additionalModelRequestFields`
for one whose catalogue schema offers them (claude-sonnet-4-6, docs/thinking.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Gateway

MODEL = "claude-sonnet-4-6"
TAGS, NATIVE = "claude-haiku-4-5", "claude-sonnet-4-6"
THINK: Any = {"type": "enabled", "budget_tokens": 4000}
TOOLS: Any = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


def create(gw: Gateway, stream: bool, model: str = MODEL, **kwargs: Any) -> Any:
    client = gw.anthropic()
    if not stream:
        return client.messages.create(model=model, max_tokens=8000, **kwargs)
    with client.messages.stream(model=model, max_tokens=8000, **kwargs) as s:
        return s.get_final_message()


def assert_thinking_sent(body: dict[str, Any], model: str) -> None:
    """Thinking went upstream as tags (TAGS) or as native fields (NATIVE; budget 4000: low)."""
    content = body["conversationState"]["currentMessage"]["userInputMessage"]["content"]
    if model == TAGS:
        assert "<thinking_mode>enabled</thinking_mode>" in content
        assert "additionalModelRequestFields" not in body
    else:
        assert "<thinking_mode>" not in content
        fields = body["additionalModelRequestFields"]
        assert fields["thinking"] == {"type": "adaptive"}
        assert fields["output_config"] == {"effort": "low"}


MODELS = pytest.mark.parametrize("model", [TAGS, NATIVE], ids=["tags", "native"])


@MODELS
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_thinking_comes_back_as_a_thinking_block(
    gateway: Gateway, stream: bool, model: str
) -> None:
    msg = create(
        gateway, stream, model, thinking=THINK, messages=[{"role": "user", "content": "hi"}]
    )
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking.startswith("Thinking about:")
    assert "<thinking>" not in msg.content[1].text
    assert_thinking_sent(gateway.emulator_requests()[-1]["body"], model)


def test_no_thinking_requested_no_thinking_block(gateway: Gateway) -> None:
    msg = create(gateway, False, messages=[{"role": "user", "content": "hi"}])
    assert [b.type for b in msg.content] == ["text"]
    sent = gateway.emulator_requests()[-1]["body"]["conversationState"]["currentMessage"]
    assert "<thinking_mode>" not in sent["userInputMessage"]["content"]


def test_native_reasoning_events_carry_their_signature(gateway: Gateway) -> None:
    directive = {"reasoning": {"text": "step by step", "signature": "sig-123"}, "text": "done"}
    content = f"go <emu>{json.dumps(directive)}</emu>"
    msg = create(gateway, True, thinking=THINK, messages=[{"role": "user", "content": content}])
    thinking = [b for b in msg.content if b.type == "thinking"]
    assert thinking and "step by step" in thinking[0].thinking
    assert thinking[0].signature == "sig-123"


@MODELS
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_thinking_keeps_working_after_a_tool_round(
    gateway: Gateway, stream: bool, model: str
) -> None:
    call = {"tool_calls": [{"name": "get_weather", "input": {"city": "Oslo"}}]}
    first = create(
        gateway,
        stream,
        model,
        thinking=THINK,
        tools=TOOLS,
        messages=[{"role": "user", "content": f"weather? <emu>{json.dumps(call)}</emu>"}],
    )
    assert [b.type for b in first.content][0] == "thinking"
    use = next(b for b in first.content if b.type == "tool_use")
    assert first.stop_reason == "tool_use"
    history: Any = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "cold"}],
        },
    ]
    second = create(gateway, stream, model, thinking=THINK, tools=TOOLS, messages=history)
    assert [b.type for b in second.content] == ["thinking", "text"]
    body = gateway.emulator_requests()[-1]["body"]
    assert_thinking_sent(body, model)
    state = body["conversationState"]
    previous = state["history"][-1]["assistantResponseMessage"]
    assert previous["content"].startswith("<thinking>") and previous["toolUses"]
