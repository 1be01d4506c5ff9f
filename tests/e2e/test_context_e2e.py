"""Context size end to end: official SDK -> gateway -> emulator (Kiro's size rules).

A conversation of ~700 KB is over what Kiro takes (~615,000 bytes). By default the gateway
answers OpenAI's 400 `context_length_exceeded` without calling Kiro; with trimming on
(KI2API_TRIM_HISTORY) it drops the oldest turns and the trimmed request passes the emulator's
validation (history starts with a user message, tool pairs intact).
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.conftest import Gateway

MODEL = "claude-sonnet-4-20250514"
SYSTEM = "You are the SYSTEM-MARKER assistant."
TOOL: Any = {
    "type": "function",
    "function": {
        "name": "read_file",
        "description": "Read a file.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
    },
}


def big_conversation(rounds: int = 70, chars: int = 5_000) -> list[Any]:
    """~10 KB per round: a question, a tool call, its result, an answer (~700 KB in all)."""
    messages: list[Any] = [{"role": "system", "content": SYSTEM}]
    for i in range(rounds):
        call_id = f"call_{i}"
        messages += [
            {"role": "user", "content": f"OLD-{i} please read file {i}. " + "q" * chars},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": "read_file", "arguments": json.dumps({"path": i})},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": "r" * chars},
            {"role": "assistant", "content": f"Read file {i}."},
        ]
    messages.append({"role": "user", "content": "LATEST question: what did you learn?"})
    return messages


def chat_calls(gateway: Gateway) -> list[dict[str, Any]]:
    return [
        r for r in gateway.emulator_requests() if r["path"].endswith("generateAssistantResponse")
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_too_big_is_refused_before_kiro(gateway: Gateway, stream: bool) -> None:
    messages = big_conversation()
    assert len(json.dumps(messages)) > 700_000
    with pytest.raises(openai.BadRequestError) as info:
        gateway.openai().chat.completions.create(
            model=MODEL, messages=messages, tools=[TOOL], stream=stream
        )
    assert info.value.status_code == 400
    assert info.value.code == "context_length_exceeded"
    assert info.value.param == "messages"
    assert info.value.type == "invalid_request_error"
    assert "maximum context length" in info.value.message
    assert chat_calls(gateway) == []  # nothing reached Kiro


def test_a_request_just_under_the_limit_is_sent(gateway: Gateway) -> None:
    reply = gateway.openai().chat.completions.create(
        model=MODEL, messages=big_conversation(rounds=50), tools=[TOOL]
    )
    assert reply.choices[0].finish_reason == "stop"
    [sent] = chat_calls(gateway)
    assert 500_000 < sent["body_bytes"] <= 600_000


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_trimming_drops_the_oldest_turns(gateway_factory: Any, stream: bool) -> None:
    gw: Gateway = gateway_factory(trim_history=True)
    messages = big_conversation()
    client = gw.openai()
    if stream:
        chunks = list(
            client.chat.completions.create(
                model=MODEL, messages=messages, tools=[TOOL], stream=True
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        reply = client.chat.completions.create(model=MODEL, messages=messages, tools=[TOOL])
        text = reply.choices[0].message.content or ""
    assert "LATEST question" in text  # the emulator echoes the current message

    [sent] = chat_calls(gw)
    assert sent["status"] == 200 and not sent["rejected"]  # it passed Kiro's rules
    assert 500_000 < sent["body_bytes"] <= 600_000  # the fewest turns were dropped
    state = sent["body"]["conversationState"]
    history = state["history"]
    assert "userInputMessage" in history[0]
    first = history[0]["userInputMessage"]
    assert first["content"].startswith(SYSTEM)  # the system prompt survived the trim
    assert "OLD-0 " not in json.dumps(history)  # the oldest turns went
    assert "OLD-69 " in json.dumps(history)  # the newest stayed
    assert "LATEST question" in state["currentMessage"]["userInputMessage"]["content"]
    uses = {
        u["toolUseId"] for h in history for u in _get(h, "assistantResponseMessage", "toolUses")
    }
    results = {
        r["toolUseId"]
        for h in history
        for r in _get(h, "userInputMessage", "userInputMessageContext", "toolResults")
    }
    assert uses == results and uses  # every kept call has its result and vice versa


def _get(entry: dict[str, Any], *path: str) -> list[Any]:
    value: Any = entry
    for key in path:
        value = value.get(key, {}) if isinstance(value, dict) else {}
    return value if isinstance(value, list) else []


def test_trimming_cannot_save_a_too_big_latest_message(gateway_factory: Any) -> None:
    gw: Gateway = gateway_factory(trim_history=True)
    messages = [
        {"role": "user", "content": "old question"},
        {"role": "assistant", "content": "old answer"},
        {"role": "user", "content": "huge " + "z" * 650_000},
    ]
    with pytest.raises(openai.BadRequestError) as info:
        gw.openai().chat.completions.create(model=MODEL, messages=messages)
    assert info.value.code == "context_length_exceeded"
    assert chat_calls(gw) == []
