"""kiro.events, tool options: name mapping back, single tool call, `[Called ...]` text."""

from __future__ import annotations

from typing import Any

import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.events import (
    Event,
    MessageStop,
    TextDelta,
    ThinkingDelta,
    ToolArgsDelta,
    ToolCallEnd,
    ToolCallStart,
    aggregate,
)
from ki2api.kiro.stream.codec import Frame
from tests.unit.test_kiro_events import content, run, text, tool, translator

LONG = "mcp__filesystem__" + "x" * 60
SHORT = "mcp__filesystem__xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx_0123456789"
NAMES = {SHORT: LONG}
CALLED = {"run": "run", SHORT: LONG, LONG: LONG}


def calls(events: list[Event]) -> list[tuple[int, str, str, str]]:
    done = aggregate(events)
    return [(i, c.id, c.name, c.arguments) for i, c in enumerate(done.tool_calls)]


def start_end(index: int, tid: str, name: str, args: str) -> list[Event]:
    return [ToolCallStart(index, tid, name), ToolArgsDelta(index, args), ToolCallEnd(index)]


# (id, frames, translator options, expected events without Usage)
CASES: list[tuple[str, list[Frame], dict[str, Any], list[Event]]] = [
    (
        "short-name-mapped-back",
        tool("t1", SHORT, "{}"),
        {"tool_names": NAMES},
        [*start_end(0, "t1", LONG, "{}"), MessageStop("tool_use")],
    ),
    (
        "unknown-name-passes-through",
        tool("t1", "other", "{}"),
        {"tool_names": NAMES},
        [*start_end(0, "t1", "other", "{}"), MessageStop("tool_use")],
    ),
    (
        "parallel-calls-indexed",
        [*tool("t1", "a", '{"x":1}'), *tool("t2", SHORT, "{}"), *tool("t3", "b", "{}")],
        {"tool_names": NAMES},
        [
            *start_end(0, "t1", "a", '{"x":1}'),
            *start_end(1, "t2", LONG, "{}"),
            *start_end(2, "t3", "b", "{}"),
            MessageStop("tool_use"),
        ],
    ),
    (
        "single-call-drops-later-ones",
        [*tool("t1", "a", '{"x":1}'), *tool("t2", "b", '{"y":'), *tool("t3", "c", "{}")],
        {"single_tool_call": True},
        [*start_end(0, "t1", "a", '{"x":1}'), MessageStop("tool_use")],
    ),
    (
        "single-call-dropped-call-without-stop",
        [*tool("t1", "a", "{}"), *tool("t2", "b", '{"y":', stop=False)],
        {"single_tool_call": True},
        [*start_end(0, "t1", "a", "{}"), MessageStop("tool_use")],
    ),
    (
        "called-text-becomes-a-call",
        text("Sure.\n", '[Called run with args: {"cmd":', ' "ls"}]'),
        {"text_call_names": CALLED},
        [
            TextDelta("Sure."),
            *start_end(0, "gen_0", "run", '{"cmd": "ls"}'),
            MessageStop("tool_use"),
        ],
    ),
    (
        "called-text-kiro-name",
        text(f"[Called {SHORT} with args: {{}}]"),
        {"text_call_names": CALLED},
        [*start_end(0, "gen_0", LONG, "{}"), MessageStop("tool_use")],
    ),
    (
        "called-text-unknown-name-is-text",
        text("[Called nope with args: {}]"),
        {"text_call_names": CALLED},
        [TextDelta("[Called nope with args: {}]"), MessageStop("end_turn")],
    ),
    (
        "called-text-off-without-names",
        text("[Called run with args: {}]"),
        {},
        [TextDelta("[Called run with args: {}]"), MessageStop("end_turn")],
    ),
    (
        "called-text-then-native-call",
        [*text("[Called run with args: {}]"), *tool("t1", "a", "{}")],
        {"text_call_names": CALLED},
        [
            *start_end(0, "gen_0", "run", "{}"),
            *start_end(1, "t1", "a", "{}"),
            MessageStop("tool_use"),
        ],
    ),
    (
        "unfinished-called-text-released-before-native-call",
        [*text("[Called run with"), *tool("t1", "a", "{}")],
        {"text_call_names": CALLED},
        [TextDelta("[Called run with"), *start_end(0, "t1", "a", "{}"), MessageStop("tool_use")],
    ),
    (
        "called-text-after-thinking",
        text("<thinking>[Called run with args: {}]</thinking>\n\n", "[Called run with args: {}]"),
        {"text_call_names": CALLED},
        [
            ThinkingDelta("[Called run with args: {}]"),
            *start_end(0, "gen_0", "run", "{}"),
            MessageStop("tool_use"),
        ],
    ),
    (
        "called-text-single-call",
        text('[Called run with args: {}] [Called run with args: {"a": 1}]'),
        {"text_call_names": CALLED, "single_tool_call": True},
        [*start_end(0, "gen_0", "run", "{}"), MessageStop("tool_use")],
    ),
]


@pytest.mark.parametrize(
    ("frames", "options", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_tool_options(frames: list[Frame], options: dict[str, Any], expected: list[Event]) -> None:
    assert content(run(frames, **options)) == expected


@pytest.mark.parametrize(
    "frames",
    [
        tool("t1", SHORT, '{"content": "abc'),
        tool("t1", SHORT, '{"content": "abc', stop=False),
        # the stream ended before the stop frame: even an input that parses may be half of
        # one (Kiro cuts large inputs and may leave the stop out), so it is never passed on
        tool("t1", SHORT, '{"a":', "1234567890}", stop=False),
    ],
    ids=["with-stop", "without-stop", "without-stop-valid-json"],
)
def test_truncated_input_error_names_the_client_tool_and_gives_advice(frames: list[Frame]) -> None:
    t = translator(tool_names=NAMES)
    with pytest.raises(GatewayError) as info:
        for f in frames:
            t.feed(f)
        t.finish()
    assert info.value.kind is ErrorKind.UPSTREAM_PROTOCOL
    assert info.value.code == "tool_input_truncated"  # the request's fault: not retried
    message = info.value.message
    assert repr(LONG) in message
    assert "cut off" in message and "16 characters" in message
    assert "smaller pieces" in message


def test_calls_after_the_first_are_dropped_even_when_truncated() -> None:
    frames = [*tool("t1", "a", "{}"), *tool("t2", "b", '{"never closed')]
    assert calls(run(frames, single_tool_call=True)) == [(0, "t1", "a", "{}")]
    with pytest.raises(GatewayError):
        run(frames)


def test_text_call_and_native_share_the_index_sequence() -> None:
    frames = [*tool("t1", "a", "{}"), *text("[Called run with args: {}]")]
    assert calls(run(frames, text_call_names=CALLED)) == [
        (0, "t1", "a", "{}"),
        (1, "gen_0", "run", "{}"),
    ]
