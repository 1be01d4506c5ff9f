"""Thinking end to end with the official openai SDK and the emulator (docs/thinking.md):
`reasoning_effort` turns Kiro's thinking mode on, thinking comes back as `reasoning_content`
only when asked for, never as content, and keeps working after a tool round."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Gateway

MODEL = "claude-sonnet-4-5"
ENABLED = "<thinking_mode>enabled</thinking_mode><max_thinking_length>{}</max_thinking_length>"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def current_content(gateway: Gateway, back: int = 1) -> str:
    body = gateway.emulator_requests()[-back]["body"]
    content: str = body["conversationState"]["currentMessage"]["userInputMessage"]["content"]
    return content


def streamed(gateway: Gateway, **kwargs: Any) -> tuple[str, str, list[Any]]:
    """(reasoning, content, tool call deltas) of one streamed completion."""
    reasoning, content, calls = [], [], []
    with gateway.openai().chat.completions.create(model=MODEL, stream=True, **kwargs) as stream:
        for chunk in stream:
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            extra = delta.model_extra or {}
            if "reasoning_content" in extra:
                reasoning.append(extra["reasoning_content"])
            content.append(delta.content or "")
            calls.extend(delta.tool_calls or ())
    return "".join(reasoning), "".join(content), calls


@pytest.mark.parametrize(
    ("effort", "budget"),
    [("low", 4000), ("high", 20000), ("max", 24576)],
    ids=["low", "high", "max"],
)
def test_stream_reasoning_effort_gives_reasoning_content(
    gateway: Gateway, effort: str, budget: int
) -> None:
    messages = [{"role": "user", "content": "hi"}]
    reasoning, content, _ = streamed(gateway, messages=messages, reasoning_effort=effort)
    assert reasoning == "Thinking about: hi"
    assert content == "Echo: hi"
    assert current_content(gateway) == ENABLED.format(budget) + "\n\nhi"


def test_non_stream_reasoning_effort_gives_message_reasoning_content(gateway: Gateway) -> None:
    resp = gateway.openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], reasoning_effort="medium"
    )
    message = resp.choices[0].message
    assert (message.model_extra or {}).get("reasoning_content") == "Thinking about: hi"
    assert message.content == "Echo: hi"
    assert resp.usage is not None and resp.usage.completion_tokens_details is not None
    assert resp.usage.completion_tokens_details.reasoning_tokens


@pytest.mark.parametrize("effort", [None, "none", "minimal"], ids=["absent", "none", "minimal"])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
def test_without_reasoning_no_thinking_is_shown(
    gateway: Gateway, effort: str | None, stream: bool
) -> None:
    # The upstream thinks anyway (directive): the client that did not ask never sees it.
    messages = [{"role": "user", "content": 'hi <emu>{"thinking": "secret plan"}</emu>'}]
    extra = {} if effort is None else {"reasoning_effort": effort}
    if stream:
        reasoning, content, _ = streamed(gateway, messages=messages, **extra)
        assert reasoning == ""
    else:
        resp = gateway.openai().chat.completions.create(model=MODEL, messages=messages, **extra)
        assert "reasoning_content" not in (resp.choices[0].message.model_extra or {})
        content = resp.choices[0].message.content or ""
    assert content == "Echo: hi"
    assert "<thinking" not in current_content(gateway)


def test_thinking_keeps_working_after_a_tool_round(gateway: Gateway) -> None:
    first = [{"role": "user", "content": "call get_weather"}]
    reasoning, content, calls = streamed(
        gateway, messages=first, tools=[WEATHER], reasoning_effort="medium"
    )
    assert reasoning == "Thinking about: call get_weather" and content == ""
    call = calls[0]
    assistant = {
        "role": "assistant",
        "content": None,
        "reasoning_content": reasoning,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": call.function.arguments},
            }
        ],
    }
    second = [*first, assistant, {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    reasoning2, content2, _ = streamed(
        gateway, messages=second, tools=[WEATHER], reasoning_effort="medium"
    )
    # the tool-result turn carries no text of its own: only the thinking-mode tags go out
    assert reasoning2 == "Thinking about: "
    assert content2 == "Echo: "
    body = gateway.emulator_requests()[-1]["body"]["conversationState"]
    assert body["currentMessage"]["userInputMessage"]["content"] == ENABLED.format(10000)
    [_, earlier] = body["history"]
    assert earlier["assistantResponseMessage"]["content"] == (
        "<thinking>Thinking about: call get_weather</thinking>\n\n"
    )
    assert earlier["assistantResponseMessage"]["toolUses"][0]["name"] == "get_weather"


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
def test_native_reasoning_content_event(gateway: Gateway, stream: bool) -> None:
    directive = '<emu>{"reasoning": {"text": "native thought", "signature": "sig-1"}}</emu>'
    messages = [{"role": "user", "content": "q " + directive}]
    if stream:
        reasoning, content, _ = streamed(gateway, messages=messages, reasoning_effort="high")
    else:
        resp = gateway.openai().chat.completions.create(
            model=MODEL, messages=messages, reasoning_effort="high"
        )
        reasoning = (resp.choices[0].message.model_extra or {})["reasoning_content"]
        content = resp.choices[0].message.content or ""
    assert (reasoning, content) == ("native thought", "Echo: q")
