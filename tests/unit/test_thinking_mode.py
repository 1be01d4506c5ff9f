"""kiro.thinking_mode: the tags that turn Kiro's thinking on, and where the request puts them."""

from __future__ import annotations

import pytest

from ki2api.core.messages import (
    Conversation,
    GenParams,
    Message,
    TextPart,
    ThinkingConfig,
    ThinkingPart,
    ToolResultPart,
    ToolSpec,
    ToolUsePart,
)
from ki2api.kiro.request.build import build_request
from ki2api.kiro.request.thinking_fields import clamp_budget, kiro_effort, thinking_prefix

ENABLED = "<thinking_mode>enabled</thinking_mode><max_thinking_length>{}</max_thinking_length>"
ADAPTIVE = "<thinking_mode>adaptive</thinking_mode><thinking_effort>{}</thinking_effort>"


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        (None, 20000),
        (0, 1024),
        (-5, 1024),
        (1023, 1024),
        (1024, 1024),
        (16000, 16000),
        (24576, 24576),
        (31999, 24576),
        (10**9, 24576),
    ],
    ids=["default", "zero", "negative", "below-min", "min", "inside", "max", "claude-code", "huge"],
)
def test_clamp_budget(budget: int | None, expected: int) -> None:
    assert clamp_budget(budget) == expected


@pytest.mark.parametrize(
    ("effort", "expected"),
    [
        (None, "high"),
        ("", "high"),
        ("minimal", "low"),
        ("low", "low"),
        ("medium", "medium"),
        ("HIGH", "high"),
        (" high ", "high"),
        ("xhigh", "high"),
        ("max", "high"),
        ("bogus", "high"),
    ],
    ids=["none", "empty", "minimal", "low", "medium", "upper", "spaces", "xhigh", "max", "unknown"],
)
def test_kiro_effort(effort: str | None, expected: str) -> None:
    assert kiro_effort(effort) == expected


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (None, ""),
        (ThinkingConfig("enabled", 8000), ENABLED.format(8000)),
        (ThinkingConfig("enabled"), ENABLED.format(20000)),
        (ThinkingConfig("enabled", 100, effort="low"), ENABLED.format(1024)),
        (ThinkingConfig("adaptive", effort="medium"), ADAPTIVE.format("medium")),
        (ThinkingConfig("adaptive"), ADAPTIVE.format("high")),
        (ThinkingConfig("adaptive", 5000, "low"), ADAPTIVE.format("low")),
    ],
    ids=[
        "off",
        "budget",
        "default-budget",
        "effort-ignored",
        "adaptive",
        "adaptive-default",
        "budget-ignored",
    ],
)
def test_thinking_prefix(config: ThinkingConfig | None, expected: str) -> None:
    assert thinking_prefix(config) == expected


WEATHER = ToolSpec("get_weather", "Weather.", {"type": "object", "properties": {}})


def _round(n: int) -> list[Message]:
    """`n` tool rounds: question, then per round a thinking + tool call and its result."""
    messages = [Message("user", (TextPart("Weather?"),))]
    for i in range(n):
        messages.append(
            Message(
                "assistant",
                (ThinkingPart(f"round {i}", "sig"), ToolUsePart(f"t{i}", "get_weather", {})),
            )
        )
        messages.append(Message("user", (ToolResultPart(f"t{i}", (TextPart("sunny"),)),)))
    return messages


def _body(messages: list[Message], thinking: ThinkingConfig | None) -> dict:  # type: ignore[type-arg]
    conv = Conversation(
        model_id="claude-sonnet-4",
        messages=tuple(messages),
        system=("Be brief.",),
        tools=(WEATHER,),
        params=GenParams(thinking=thinking),
    )
    return build_request(conv, conversation_id="c", profile_arn=None)


@pytest.mark.parametrize("rounds", [0, 1, 3], ids=["no-round", "one-round", "three-rounds"])
def test_tags_open_the_current_message_after_tool_rounds(rounds: int) -> None:
    state = _body(_round(rounds), ThinkingConfig("enabled", 4096))["conversationState"]
    current = state["currentMessage"]["userInputMessage"]["content"]
    # after tool rounds the current turn only carries results: its content is empty (as real
    # clients send it, docs/kiro-protocol.md §3.5) but for the tags
    assert (
        current == ENABLED.format(4096)
        if rounds
        else current.startswith(ENABLED.format(4096) + "\n\n")
    )
    history_users = [
        h["userInputMessage"]["content"] for h in state["history"] if "userInputMessage" in h
    ]
    assert all("<thinking_mode>" not in text for text in history_users)
    thoughts = [h["assistantResponseMessage"]["content"] for h in state["history"][1::2]]
    assert thoughts == [f"<thinking>round {i}</thinking>\n\n" for i in range(rounds)]


@pytest.mark.parametrize("rounds", [0, 2], ids=["no-round", "two-rounds"])
def test_no_tags_without_thinking(rounds: int) -> None:
    state = _body(_round(rounds), None)["conversationState"]
    texts = [state["currentMessage"]["userInputMessage"]["content"]] + [
        h["userInputMessage"]["content"] for h in state["history"] if "userInputMessage" in h
    ]
    assert all("<thinking_mode>" not in text for text in texts)
