"""completion_response: the exact `chat.completion` object (docs/api-compat.md §A.4, §A.5),
validated by the SDK."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.chat import ChatCompletion

from ki2api.core.events import Completion, CompletionToolCall, StopReason, Usage
from ki2api.frontends.openai.from_core import completion_response

CALL_A = CompletionToolCall("call_a", "get_weather", '{"city":"Paris"}')
CALL_B = CompletionToolCall("call_b", "get_time", "{}")
USAGE = Usage(input_tokens=10, output_tokens=4, estimated=False)


def completion(
    text: str = "",
    *,
    thinking: str = "",
    calls: tuple[CompletionToolCall, ...] = (),
    stop: StopReason = "end_turn",
    usage: Usage | None = USAGE,
) -> Completion:
    return Completion(text, thinking, None, calls, stop, usage)


def render(c: Completion, *, include_reasoning: bool = True) -> dict[str, Any]:
    """Rendered as for a client that asked for reasoning, unless told otherwise."""
    return completion_response(
        c,
        completion_id="chatcmpl-abc",
        created=1_700_000_000,
        model="gpt-4o",
        prompt_tokens_fallback=50,
        include_reasoning=include_reasoning,
    )


def usage(
    prompt: int, completion_tokens: int, cached: int = 0, reasoning: int = 0
) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def tool_json(call: CompletionToolCall) -> dict[str, Any]:
    function = {"name": call.name, "arguments": call.arguments}
    return {"id": call.id, "type": "function", "function": function}


# (id, completion, expected message fields beyond role/refusal/annotations, finish, usage)
CASES: list[tuple[str, Completion, dict[str, Any], str, dict[str, Any]]] = [
    ("text", completion("Hello"), {"content": "Hello"}, "stop", usage(10, 4)),
    ("empty", completion(""), {"content": ""}, "stop", usage(10, 4)),
    (
        "stop-sequence",
        completion("a", stop="stop_sequence"),
        {"content": "a"},
        "stop",
        usage(10, 4),
    ),
    ("max-tokens", completion("a", stop="max_tokens"), {"content": "a"}, "length", usage(10, 4)),
    (
        "context-window",
        completion("a", stop="context_window_exceeded"),
        {"content": "a"},
        "length",
        usage(10, 4),
    ),
    (
        "tools-only",
        completion(calls=(CALL_A, CALL_B), stop="tool_use"),
        {"content": None, "tool_calls": [tool_json(CALL_A), tool_json(CALL_B)]},
        "tool_calls",
        usage(10, 4),
    ),
    (
        "text-and-tool",
        completion("Checking.", calls=(CALL_A,), stop="tool_use"),
        {"content": "Checking.", "tool_calls": [tool_json(CALL_A)]},
        "tool_calls",
        usage(10, 4),
    ),
    (
        "tool-with-end-turn",
        completion(calls=(CALL_B,), stop="end_turn"),
        {"content": None, "tool_calls": [tool_json(CALL_B)]},
        "tool_calls",
        usage(10, 4),
    ),
    (
        "thinking",
        completion("42", thinking="Let me think this through step by step."),
        {"content": "42", "reasoning_content": "Let me think this through step by step."},
        "stop",
        usage(10, 4, reasoning=4),
    ),
    (
        "cache-usage",
        completion(
            "x", usage=Usage(10, 3, cache_read_input_tokens=100, cache_creation_input_tokens=20)
        ),
        {"content": "x"},
        "stop",
        usage(130, 3, cached=100),
    ),
]


@pytest.mark.parametrize(
    ("c", "message", "finish", "expected_usage"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_response(
    c: Completion, message: dict[str, Any], finish: str, expected_usage: dict[str, Any]
) -> None:
    body = render(c)
    assert body == {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "refusal": None, "annotations": [], **message},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": expected_usage,
    }


@pytest.mark.parametrize("c", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_sdk_model_and_spec_required_keys(c: Completion) -> None:
    body = render(c)
    parsed = ChatCompletion.model_validate(body)
    assert parsed.object == "chat.completion" and parsed.choices[0].message.role == "assistant"
    assert parsed.usage is not None
    assert parsed.usage.total_tokens == parsed.usage.prompt_tokens + parsed.usage.completion_tokens
    # The OpenAPI spec requires these keys even when null (the SDK models do not check that).
    assert {"id", "object", "created", "model", "choices"} <= body.keys()
    choice = body["choices"][0]
    assert {"index", "message", "logprobs", "finish_reason"} <= choice.keys()
    assert {"role", "content", "refusal"} <= choice["message"].keys()
    for call in choice["message"].get("tool_calls", []):
        assert {"id", "type", "function"} <= call.keys()
        assert {"name", "arguments"} <= call["function"].keys()


def test_no_reasoning_content_key_without_thinking() -> None:
    assert "reasoning_content" not in render(completion("plain"))["choices"][0]["message"]


def test_thinking_not_asked_for_is_dropped_but_counted() -> None:
    c = completion("42", thinking="Let me think this through step by step.")
    body = render(c, include_reasoning=False)
    message = body["choices"][0]["message"]
    assert "reasoning_content" not in message and message["content"] == "42"
    assert body["usage"] == usage(10, 4, reasoning=4)


def test_reasoning_is_off_by_default() -> None:
    c = completion("42", thinking="hidden")
    body = completion_response(c, completion_id="x", created=1, model="m", prompt_tokens_fallback=1)
    assert "reasoning_content" not in body["choices"][0]["message"]


def test_usage_fallback_without_upstream_usage() -> None:
    body = render(completion("word " * 40, thinking="idea " * 20, calls=(CALL_A,), usage=None))
    u = body["usage"]
    assert u["prompt_tokens"] == 50
    reasoning = u["completion_tokens_details"]["reasoning_tokens"]
    assert 0 < reasoning < u["completion_tokens"]
    assert u["total_tokens"] == 50 + u["completion_tokens"]
    assert u["prompt_tokens_details"] == {"cached_tokens": 0}


def test_reasoning_tokens_never_exceed_completion_tokens() -> None:
    body = render(completion("a", thinking="long thought " * 50, usage=Usage(5, 2)))
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 2
