"""The emulator's thinking: thinking-mode tags answered with a `<thinking>` block, and the
`reasoning` directive's native `reasoningContentEvent` frames; each run through the real
decoder and stream translator (what the gateway does with them)."""

from __future__ import annotations

from itertools import count
from typing import Any

import orjson
import pytest

from ki2api.core.events import TextDelta, ThinkingDelta, aggregate
from ki2api.core.messages import ThinkingConfig
from ki2api.kiro.request.thinking_fields import thinking_prefix
from ki2api.kiro.stream.codec import decode_all
from ki2api.kiro.stream.translate import KiroStreamTranslator
from kiro_emulator.script import parse_directives, plan_reply, split_thinking_mode
from kiro_emulator.stream import build_plan

ENABLED = thinking_prefix(ThinkingConfig("enabled", 4000))
ADAPTIVE = thinking_prefix(ThinkingConfig("adaptive", effort="low"))


def frames(content: str, tools: dict[str, dict[str, Any]] | None = None) -> list[Any]:
    directives, rest = parse_directives(content)
    ids = count()
    reply = plan_reply(rest, tools or {}, directives, lambda: f"tooluse_{next(ids)}")
    plan = build_plan(reply, directives, "claude-sonnet-4", len(content))
    return decode_all(b"".join(plan.frames))


def translated(content: str, tools: dict[str, dict[str, Any]] | None = None) -> Any:
    tr = KiroStreamTranslator(input_tokens=1)
    events = [e for f in frames(content, tools) for e in tr.feed(f)] + tr.finish()
    return events, aggregate(events)


@pytest.mark.parametrize(
    ("content", "on", "rest"),
    [
        ("hi", False, "hi"),
        (f"{ENABLED}\n\nhi", True, "hi"),
        (f"{ADAPTIVE}\n\nhi", True, "hi"),
        ("<thinking_mode>enabled</thinking_mode>hi", True, "hi"),
        (
            "<thinking_mode>disabled</thinking_mode>hi",
            False,
            "<thinking_mode>disabled</thinking_mode>hi",
        ),
        (f"sys\n\n{ENABLED}\n\nhi", True, "sys\n\nhi"),
    ],
    ids=["plain", "enabled", "adaptive", "bare-tag", "unknown-mode", "after-system"],
)
def test_split_thinking_mode(content: str, on: bool, rest: str) -> None:
    assert split_thinking_mode(content) == (on, rest)


@pytest.mark.parametrize(
    ("content", "thinking", "text"),
    [
        ("hi", "", "Echo: hi"),
        (f"{ENABLED}\n\nhi", "Thinking about: hi", "Echo: hi"),
        (f"{ADAPTIVE}\n\nhi", "Thinking about: hi", "Echo: hi"),
        (f'{ENABLED}\n\nhi <emu>{{"thinking": "own"}}</emu>', "own", "Echo: hi"),
        (f'{ENABLED}\n\nhi <emu>{{"text": "T"}}</emu>', "Thinking about: hi", "T"),
    ],
    ids=["off", "enabled", "adaptive", "directive-wins", "scripted-text"],
)
def test_thinking_mode_reply(content: str, thinking: str, text: str) -> None:
    _, completion = translated(content)
    assert (completion.thinking, completion.text) == (thinking, text)
    assert "<thinking" not in completion.text


def test_thinking_block_comes_before_a_tool_call() -> None:
    tools = {"get_weather": {"type": "object", "properties": {"city": {"type": "string"}}}}
    _, completion = translated(f"{ENABLED}\n\ncall get_weather", tools)
    assert completion.thinking == "Thinking about: call get_weather"
    assert [c.name for c in completion.tool_calls] == ["get_weather"]
    assert completion.text == ""


@pytest.mark.parametrize(
    ("directive", "payloads"),
    [
        (
            {"reasoning": "abcdef"},
            [{"text": "ab"}, {"text": "cd"}, {"text": "ef", "signature": "emu-signature"}],
        ),
        (
            {"reasoning": {"text": "xy", "signature": "s-1"}},
            [{"text": "x"}, {"text": "y", "signature": "s-1"}],
        ),
        ({"reasoning": {"text": ""}}, [{"text": "", "signature": "emu-signature"}]),
    ],
    ids=["string", "object", "empty-text"],
)
def test_reasoning_directive_frames(directive: dict[str, Any], payloads: list[Any]) -> None:
    got = frames("q <emu>" + orjson.dumps(directive).decode() + "</emu>")
    reasoning = [orjson.loads(f.payload) for f in got if f.event_type == "reasoningContentEvent"]
    assert reasoning == payloads
    assert got[0].event_type == "reasoningContentEvent"


@pytest.mark.parametrize(
    "directive",
    [
        {"reasoning": 5},
        {"reasoning": {"signature": "s"}},
        {"reasoning": {"text": "t", "signature": 1}},
    ],
    ids=["number", "no-text", "bad-signature"],
)
def test_bad_reasoning_directive_is_ignored(directive: dict[str, Any]) -> None:
    directives, _ = parse_directives("<emu>" + orjson.dumps(directive).decode() + "</emu>")
    assert directives.reasoning is None


def test_reasoning_directive_through_the_translator() -> None:
    events, completion = translated(
        f'{ENABLED}\n\nq <emu>{{"reasoning": {{"text": "native", "signature": "s-9"}}}}</emu>'
    )
    assert (completion.thinking, completion.thinking_signature) == ("native", "s-9")
    assert completion.text == "Echo: q"
    kinds = [type(e) for e in events if isinstance(e, TextDelta | ThinkingDelta)]
    assert kinds.index(TextDelta) > max(i for i, k in enumerate(kinds) if k is ThinkingDelta)
