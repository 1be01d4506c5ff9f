"""Thinking through the Anthropic surface: blocks, signatures, and across tool rounds."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Gateway

MODEL = "claude-sonnet-4-6"
THINK: Any = {"type": "enabled", "budget_tokens": 4000}
TOOLS: Any = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


def create(gw: Gateway, stream: bool, **kwargs: Any) -> Any:
    client = gw.anthropic()
    if not stream:
        return client.messages.create(model=MODEL, max_tokens=8000, **kwargs)
    with client.messages.stream(model=MODEL, max_tokens=8000, **kwargs) as s:
        return s.get_final_message()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_thinking_comes_back_as_a_thinking_block(gateway: Gateway, stream: bool) -> None:
    msg = create(gateway, stream, thinking=THINK, messages=[{"role": "user", "content": "hi"}])
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking.startswith("Thinking about:")
    assert "<thinking>" not in msg.content[1].text
    sent = gateway.emulator_requests()[-1]["body"]["conversationState"]["currentMessage"]
    assert "<thinking_mode>enabled</thinking_mode>" in sent["userInputMessage"]["content"]


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


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_thinking_keeps_working_after_a_tool_round(gateway: Gateway, stream: bool) -> None:
    call = {"tool_calls": [{"name": "get_weather", "input": {"city": "Oslo"}}]}
    first = create(
        gateway,
        stream,
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
    second = create(gateway, stream, thinking=THINK, tools=TOOLS, messages=history)
    assert [b.type for b in second.content] == ["thinking", "text"]
    state = gateway.emulator_requests()[-1]["body"]["conversationState"]
    assert "<thinking_mode>enabled" in state["currentMessage"]["userInputMessage"]["content"]
    previous = state["history"][-1]["assistantResponseMessage"]
    assert previous["content"].startswith("<thinking>") and previous["toolUses"]
