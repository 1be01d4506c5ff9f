"""Requests shaped as real clients send them (docs/kiro-protocol.md: one `conversationId` per
conversation, `""` content on turns that only carry tool results), checked at the emulator, which
validates like Kiro."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Gateway
from tests.support.payloads import WEATHER_TOOL

MODEL = "claude-sonnet-4-20250514"
SESSION = "7f6c2b2e-1f2a-4c3d-9e8f-0a1b2c3d4e5f"
CLAUDE_CODE_USER = f"user_{'ab' * 32}_account_1c2d3e4f-0000-4000-8000-000000000001_session_"


def sent(gw: Gateway, n: int) -> list[dict[str, Any]]:
    """The last `n` chat bodies the emulator received from this gateway's account."""
    chats = [q for q in gw.emulator_requests() if "conversationState" in (q.get("body") or {})]
    assert len(chats) >= n
    return [q["body"]["conversationState"] for q in chats[-n:]]


def test_one_conversation_id_per_conversation_openai(gateway: Gateway) -> None:
    client = gateway.openai()
    system = {"role": "system", "content": "You are terse."}
    turn1 = [system, {"role": "user", "content": "first question"}]
    answer = client.chat.completions.create(model=MODEL, messages=turn1)  # type: ignore[arg-type]
    reply = {"role": "assistant", "content": answer.choices[0].message.content}
    turn2 = [*turn1, reply, {"role": "user", "content": "second question"}]
    client.chat.completions.create(model=MODEL, messages=turn2)  # type: ignore[arg-type]
    other = [system, {"role": "user", "content": "another conversation"}]
    client.chat.completions.create(model=MODEL, messages=other)  # type: ignore[arg-type]
    a1, a2, b = (s["conversationId"] for s in sent(gateway, 3))
    assert a1 == a2  # the same conversation, one more turn: the same id
    assert b != a1  # another conversation: another id


def test_claude_code_session_names_the_conversation(gateway: Gateway) -> None:
    client = gateway.anthropic()

    def ask(text: str, session: str) -> None:
        client.messages.create(
            model=MODEL,
            max_tokens=64,
            messages=[{"role": "user", "content": text}],
            metadata={"user_id": CLAUDE_CODE_USER + session},
        )

    ask("one", SESSION)
    ask("two", SESSION)  # a different start, the same session
    ask("one", SESSION[:-1] + "0")
    a, b, c = (s["conversationId"] for s in sent(gateway, 3))
    assert a == b != c


def test_a_tool_result_turn_goes_out_with_empty_content(gateway: Gateway) -> None:
    client = gateway.openai()
    messages: list[Any] = [{"role": "user", "content": "call get_weather"}]
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny"})
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    current = sent(gateway, 1)[0]["currentMessage"]["userInputMessage"]
    assert current["content"] == ""
    [result] = current["userInputMessageContext"]["toolResults"]
    assert result["content"] == [{"text": "sunny"}]
    # a later turn keeps that tool-result turn in history, still with empty content
    messages.append(second.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "user", "content": "thanks"})
    third = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    assert third.choices[0].message.content == "Echo: thanks"
    history = sent(gateway, 1)[0]["history"]
    with_results = [
        h["userInputMessage"]
        for h in history
        if "toolResults" in h.get("userInputMessage", {}).get("userInputMessageContext", {})
    ]
    assert [u["content"] for u in with_results] == [""]
    assert json.dumps(history).count("Tool results provided") == 0
