"""OpenAI reasoning: `reasoning_effort` -> ThinkingConfig, `reasoning_content` in history, and
the encoders' `include_reasoning` flag (docs/thinking.md)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from ki2api.core.events import Event, MessageStop, TextDelta, ThinkingDelta
from ki2api.core.messages import TextPart, ThinkingConfig, ThinkingPart, ToolUsePart
from ki2api.core.models import default_catalogue
from ki2api.frontends.openai.from_core import ChunkEncoder
from ki2api.frontends.openai.to_core import thinking_config, to_conversation
from ki2api.frontends.openai.wire import parse_chat_request

MODEL = "claude-sonnet-4-5"


def convert(**fields: Any) -> Any:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}
    info = default_catalogue().resolve(MODEL)
    assert info is not None
    return to_conversation(parse_chat_request(orjson.dumps(body)), info)


EFFORTS: list[tuple[str | None, ThinkingConfig | None]] = [
    (None, None),
    ("", None),
    ("none", None),
    ("minimal", None),
    ("low", ThinkingConfig("enabled", 4000)),
    ("medium", ThinkingConfig("enabled", 10000)),
    ("high", ThinkingConfig("enabled", 20000)),
    ("HIGH", ThinkingConfig("enabled", 20000)),
    ("xhigh", ThinkingConfig("enabled", 24576)),
    ("max", ThinkingConfig("enabled", 24576)),
    ("turbo", ThinkingConfig("enabled")),
]
EFFORT_IDS = [
    "absent",
    "empty",
    "none",
    "minimal",
    "low",
    "medium",
    "high",
    "upper",
    "xhigh",
    "max",
    "unknown",
]


@pytest.mark.parametrize(("effort", "expected"), EFFORTS, ids=EFFORT_IDS)
def test_thinking_config(effort: str | None, expected: ThinkingConfig | None) -> None:
    assert thinking_config(effort) == expected


@pytest.mark.parametrize(("effort", "expected"), EFFORTS, ids=EFFORT_IDS)
def test_reasoning_effort_sets_params_thinking(
    effort: str | None, expected: ThinkingConfig | None
) -> None:
    fields = {} if effort is None else {"reasoning_effort": effort}
    assert convert(**fields).params.thinking == expected


@pytest.mark.parametrize(
    ("assistant", "parts"),
    [
        (
            {"content": "42", "reasoning_content": "think"},
            (ThinkingPart("think"), TextPart("42")),
        ),
        ({"content": "42", "reasoning_content": ""}, (TextPart("42"),)),
        ({"content": "42", "reasoning_content": 7}, (TextPart("42"),)),
        (
            {
                "content": None,
                "reasoning_content": "need a tool",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            (ThinkingPart("need a tool"), ToolUsePart("c1", "f", {})),
        ),
    ],
    ids=["text", "empty-ignored", "not-a-string-ignored", "tool-call"],
)
def test_reasoning_content_in_history(assistant: dict[str, Any], parts: tuple[Any, ...]) -> None:
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", **assistant},
        {"role": "user", "content": "more"},
    ]
    conv = convert(messages=messages)
    assert conv.messages[1].parts == parts


def _stream(include_reasoning: bool | None) -> list[dict[str, Any]]:
    extra = {} if include_reasoning is None else {"include_reasoning": include_reasoning}
    enc = ChunkEncoder(
        completion_id="c",
        created=1,
        model="m",
        include_usage=False,
        prompt_tokens_fallback=1,
        **extra,
    )
    events: list[Event] = [
        ThinkingDelta("deep"),
        ThinkingDelta("", "sig"),
        TextDelta("42"),
        MessageStop("end_turn"),
    ]
    raw = b"".join(enc.feed(e) for e in events).decode()
    datas = [line[6:] for line in raw.splitlines() if line.startswith("data: ")]
    return [json.loads(d)["choices"][0]["delta"] for d in datas if d != "[DONE]"]


@pytest.mark.parametrize(
    ("flag", "reasoning"),
    [(None, []), (False, []), (True, ["deep"])],
    ids=["default", "off", "on"],
)
def test_chunk_encoder_flag(flag: bool | None, reasoning: list[str]) -> None:
    deltas = _stream(flag)
    assert [d["reasoning_content"] for d in deltas if "reasoning_content" in d] == reasoning
    assert "".join(d.get("content") or "" for d in deltas) == "42"
