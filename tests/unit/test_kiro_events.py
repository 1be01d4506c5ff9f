"""kiro.events: Kiro frames -> core events (table of frame sequences -> expected events)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
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
    Usage,
    aggregate,
)
from ki2api.kiro.stream.codec import EventStreamDecoder, Frame, encode_event
from ki2api.kiro.stream.translate import KiroStreamTranslator

TEXT = "assistantResponseEvent"
TOOL = "toolUseEvent"


def ev(event_type: str, payload: Any) -> Frame:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Frame(
        headers={
            ":event-type": event_type,
            ":content-type": "application/json",
            ":message-type": "event",
        },
        payload=raw,
    )


def exc(exc_type: str, message: str = "boom") -> Frame:
    return Frame(
        headers={":exception-type": exc_type, ":message-type": "exception"},
        payload=json.dumps({"message": message}).encode(),
    )


def text(*chunks: str) -> list[Frame]:
    return [ev(TEXT, {"content": c}) for c in chunks]


def tool(tid: str, name: str, *fragments: Any, stop: bool = True) -> list[Frame]:
    frames = [ev(TOOL, {"toolUseId": tid, "name": name})]
    frames += [ev(TOOL, {"toolUseId": tid, "name": name, "input": f}) for f in fragments]
    if stop:
        frames.append(ev(TOOL, {"toolUseId": tid, "name": name, "stop": True}))
    return frames


def _ids() -> Iterator[str]:
    return (f"gen_{i}" for i in itertools.count())


def translator(**kw: Any) -> KiroStreamTranslator:
    ids = _ids()
    return KiroStreamTranslator(
        input_tokens=kw.pop("input_tokens", 100), id_factory=lambda: next(ids), **kw
    )


def run(frames: list[Frame], **kw: Any) -> list[Event]:
    t = translator(**kw)
    out: list[Event] = []
    for f in frames:
        out += t.feed(f)
    return out + t.finish()


def content(events: list[Event]) -> list[Event]:
    return [e for e in events if not isinstance(e, Usage)]


# (id, frames, expected events without Usage)
CASES: list[tuple[str, list[Frame], list[Event]]] = [
    (
        "plain-text",
        text("Hel", "lo"),
        [TextDelta("Hel"), TextDelta("lo"), MessageStop("end_turn")],
    ),
    (
        "empty-content-skipped",
        [*text("", "a"), ev(TEXT, {"modelId": "x"}), ev(TEXT, {"content": None})],
        [TextDelta("a"), MessageStop("end_turn")],
    ),
    (
        "repeats-kept",
        text("ha", "ha", "ha"),
        [TextDelta("ha"), TextDelta("ha"), TextDelta("ha"), MessageStop("end_turn")],
    ),
    (
        "thinking-whole",
        text("<thinking>hmm</thinking>\n\nAnswer"),
        [ThinkingDelta("hmm"), TextDelta("Answer"), MessageStop("end_turn")],
    ),
    (
        "thinking-tags-split",
        text("<thi", "nking>a", "b</th", "inking>", "\n", "\nAnswer"),
        [ThinkingDelta("a"), ThinkingDelta("b"), TextDelta("Answer"), MessageStop("end_turn")],
    ),
    (
        "thinking-single-newline-kept",
        text("<thinking>a</thinking>\nB"),
        [ThinkingDelta("a"), TextDelta("\nB"), MessageStop("end_turn")],
    ),
    (
        "thinking-only-one-blank-line-dropped",
        text("<thinking>a</thinking>\n\n\nB"),
        [ThinkingDelta("a"), TextDelta("\nB"), MessageStop("end_turn")],
    ),
    (
        "thinking-leading-whitespace",
        text("\n", "<thinking>a</thinking>B"),
        [ThinkingDelta("a"), TextDelta("B"), MessageStop("end_turn")],
    ),
    (
        "thinking-not-at-start-is-text",
        text("Hi <thinking>x</thinking>"),
        [TextDelta("Hi <thinking>x</thinking>"), MessageStop("end_turn")],
    ),
    (
        "thinking-after-text-is-text",
        text("Hi", "<thinking>x</thinking>"),
        [TextDelta("Hi"), TextDelta("<thinking>x</thinking>"), MessageStop("end_turn")],
    ),
    (
        "tag-prefix-that-is-not-a-tag",
        text("<thi", "s is html>"),
        [TextDelta("<this is html>"), MessageStop("end_turn")],
    ),
    (
        "held-tag-prefix-flushed-at-end",
        text("<think"),
        [TextDelta("<think"), MessageStop("end_turn")],
    ),
    (
        "unclosed-thinking-flushed-at-end",
        text("<thinking>abc</thi"),
        [ThinkingDelta("abc"), ThinkingDelta("</thi"), MessageStop("end_turn")],
    ),
    (
        "native-reasoning",
        [
            ev("reasoningContentEvent", {"text": "why"}),
            ev("reasoningContentEvent", {"text": "", "signature": "sig1"}),
            ev("reasoningContentEvent", {"redactedContent": "AAAA"}),
            *text("ok"),
        ],
        [ThinkingDelta("why"), ThinkingDelta("", "sig1"), TextDelta("ok"), MessageStop("end_turn")],
    ),
    (
        "one-tool-call",
        tool("t1", "get_weather", '{"ci', 'ty":"Paris"}'),
        [
            ToolCallStart(0, "t1", "get_weather"),
            ToolArgsDelta(0, '{"ci'),
            ToolArgsDelta(0, 'ty":"Paris"}'),
            ToolCallEnd(0),
            MessageStop("tool_use"),
        ],
    ),
    (
        "text-then-two-tool-calls",
        [*text("Let me check."), *tool("t1", "a", "{}"), *tool("t2", "b", '{"x":1}')],
        [
            TextDelta("Let me check."),
            ToolCallStart(0, "t1", "a"),
            ToolArgsDelta(0, "{}"),
            ToolCallEnd(0),
            ToolCallStart(1, "t2", "b"),
            ToolArgsDelta(1, '{"x":1}'),
            ToolCallEnd(1),
            MessageStop("tool_use"),
        ],
    ),
    (
        "object-input",
        tool("t1", "a", {"x": [1, "é"]}),
        [
            ToolCallStart(0, "t1", "a"),
            ToolArgsDelta(0, '{"x":[1,"é"]}'),
            ToolCallEnd(0),
            MessageStop("tool_use"),
        ],
    ),
    (
        "nested-wrapper",
        [
            ev(TOOL, {"toolUseEvent": {"toolUseId": "t1", "name": "a", "input": '{"k":2}'}}),
            ev(TOOL, {"toolUseEvent": {"toolUseId": "t1", "name": "a", "stop": True}}),
        ],
        [
            ToolCallStart(0, "t1", "a"),
            ToolArgsDelta(0, '{"k":2}'),
            ToolCallEnd(0),
            MessageStop("tool_use"),
        ],
    ),
    (
        "start-with-input-and-stop-in-one-event",
        [ev(TOOL, {"toolUseId": "t1", "name": "a", "input": "{}", "stop": True})],
        [
            ToolCallStart(0, "t1", "a"),
            ToolArgsDelta(0, "{}"),
            ToolCallEnd(0),
            MessageStop("tool_use"),
        ],
    ),
    (
        "empty-args-become-empty-object",
        tool("t1", "a"),
        [
            ToolCallStart(0, "t1", "a"),
            ToolArgsDelta(0, "{}"),
            ToolCallEnd(0),
            MessageStop("tool_use"),
        ],
    ),
    (
        "open-call-closed-by-next-call",
        [*tool("t1", "a", "{}", stop=False), *tool("t2", "b", "{}")],
        [
            ToolCallStart(0, "t1", "a"),
            ToolArgsDelta(0, "{}"),
            ToolCallEnd(0),
            ToolCallStart(1, "t2", "b"),
            ToolArgsDelta(1, "{}"),
            ToolCallEnd(1),
            MessageStop("tool_use"),
        ],
    ),
    (
        "empty-name-unknown-id-ignored",
        [ev(TOOL, {"toolUseId": "t9", "name": "", "input": "{"}), *text("x")],
        [TextDelta("x"), MessageStop("end_turn")],
    ),
    (
        "duplicate-stop-ignored",
        [*tool("t1", "a", "{}"), ev(TOOL, {"toolUseId": "t1", "name": "a", "stop": True})],
        [
            ToolCallStart(0, "t1", "a"),
            ToolArgsDelta(0, "{}"),
            ToolCallEnd(0),
            MessageStop("tool_use"),
        ],
    ),
    (
        "missing-id-gets-generated",
        [
            ev(TOOL, {"name": "a", "input": "{"}),
            ev(TOOL, {"name": "a", "input": "}", "stop": True}),
        ],
        [
            ToolCallStart(0, "gen_0", "a"),
            ToolArgsDelta(0, "{"),
            ToolArgsDelta(0, "}"),
            ToolCallEnd(0),
            MessageStop("tool_use"),
        ],
    ),
    (
        "held-thinking-tag-flushed-before-tool",
        [*text("<thin"), *tool("t1", "a", "{}")],
        [
            TextDelta("<thin"),
            ToolCallStart(0, "t1", "a"),
            ToolArgsDelta(0, "{}"),
            ToolCallEnd(0),
            MessageStop("tool_use"),
        ],
    ),
    (
        "ignored-and-unknown-events",
        [
            ev("messageMetadataEvent", {"conversationId": "c"}),
            ev("followupPromptEvent", {"followupPrompt": {"content": "more?"}}),
            ev("codeReferenceEvent", {"references": []}),
            ev("supplementaryWebLinksEvent", {"supplementaryWebLinks": []}),
            ev("brandNewEvent", b"not even json"),
            Frame(headers={":message-type": "somethingElse"}, payload=b"??"),
            *text("x"),
        ],
        [TextDelta("x"), MessageStop("end_turn")],
    ),
    (
        "content-length-exceeded-is-max-tokens",
        [*text("partial"), exc("ContentLengthExceededException")],
        [TextDelta("partial"), MessageStop("max_tokens")],
    ),
    (
        "context-full",
        [*text("x"), ev("contextUsageEvent", {"contextUsagePercentage": 100.0})],
        [TextDelta("x"), MessageStop("context_window_exceeded")],
    ),
]


@pytest.mark.parametrize(("frames", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_translation(frames: list[Frame], expected: list[Event]) -> None:
    events = run(frames)
    assert content(events) == expected


def test_split_thinking_false_keeps_tags_as_text() -> None:
    events = run(text("<thinking>a</thinking>"), split_thinking=False)
    assert content(events) == [TextDelta("<thinking>a</thinking>"), MessageStop("end_turn")]


def test_stream_shape_usage_then_one_stop_at_the_end() -> None:
    events = run([*text("a"), *tool("t1", "x", "{}")])
    assert isinstance(events[-1], MessageStop)
    assert isinstance(events[-2], Usage)
    assert sum(isinstance(e, MessageStop | Usage) for e in events) == 2


def test_events_come_out_with_the_frame_that_carries_them() -> None:
    t = translator()
    assert t.feed(text("Hello")[0]) == [TextDelta("Hello")]
    assert t.feed(tool("t1", "a")[0]) == [ToolCallStart(0, "t1", "a")]
    assert t.feed(ev(TOOL, {"toolUseId": "t1", "name": "a", "input": '{"a"'})) == [
        ToolArgsDelta(0, '{"a"')
    ]
    t2 = translator()
    assert t2.feed(text("<thinking>deep ")[0]) == [ThinkingDelta("deep ")]


THINKING_STREAM = "\n<thinking>step 1 </thinking> here</thinking>\n\nThe answer <thinking>x"


def test_any_chunking_gives_the_same_result() -> None:
    n = len(THINKING_STREAM)
    for a, b in itertools.combinations(range(1, n), 2):
        pieces = [THINKING_STREAM[:a], THINKING_STREAM[a:b], THINKING_STREAM[b:]]
        done = aggregate(run(text(*pieces)))
        assert (done.thinking, done.text) == (
            "step 1 ",
            " here</thinking>\n\nThe answer <thinking>x",
        ), pieces


# (id, frames, error kind, substring of the message)
FAILURES: list[tuple[str, list[Frame], ErrorKind, str]] = [
    ("throttling-frame", [*text("a"), exc("ThrottlingException")], ErrorKind.RATE_LIMITED, ""),
    (
        "error-message-frame",
        [
            Frame(
                headers={":message-type": "error", ":error-code": "InternalServerException"},
                payload=b"",
            )
        ],
        ErrorKind.UPSTREAM_UNAVAILABLE,
        "",
    ),
    ("malformed-text-json", [ev(TEXT, b'{"content": "x')], ErrorKind.UPSTREAM_PROTOCOL, "JSON"),
    ("text-payload-not-object", [ev(TEXT, b'"x"')], ErrorKind.UPSTREAM_PROTOCOL, "object"),
    ("content-wrong-type", [ev(TEXT, {"content": 5})], ErrorKind.UPSTREAM_PROTOCOL, "content"),
    ("malformed-tool-json", [ev(TOOL, b"{toolUseId:")], ErrorKind.UPSTREAM_PROTOCOL, ""),
    (
        "tool-input-wrong-type",
        [ev(TOOL, {"toolUseId": "t", "name": "a", "input": 3})],
        ErrorKind.UPSTREAM_PROTOCOL,
        "",
    ),
    (
        "stop-wrong-type",
        [ev(TOOL, {"toolUseId": "t", "name": "a", "stop": "yes"})],
        ErrorKind.UPSTREAM_PROTOCOL,
        "",
    ),
    ("malformed-metering", [ev("meteringEvent", b"")], ErrorKind.UPSTREAM_PROTOCOL, ""),
    (
        "malformed-ignored-known-type",
        [ev("messageMetadataEvent", b"{")],
        ErrorKind.UPSTREAM_PROTOCOL,
        "",
    ),
    ("empty-payload", [ev(TEXT, b"")], ErrorKind.UPSTREAM_PROTOCOL, ""),
    (
        "truncated-args-at-stop",
        tool("t1", "a", '{"path": "/tm'),
        ErrorKind.UPSTREAM_PROTOCOL,
        "cut off",
    ),
    (
        "truncated-args-at-finish",
        tool("t1", "a", '{"path"', stop=False),
        ErrorKind.UPSTREAM_PROTOCOL,
        "cut off",
    ),
    ("args-not-an-object", tool("t1", "a", "[1, 2]"), ErrorKind.UPSTREAM_PROTOCOL, "cut off"),
    (
        "args-after-stop",
        [*tool("t1", "a", "{}"), ev(TOOL, {"toolUseId": "t1", "name": "a", "input": "{}"})],
        ErrorKind.UPSTREAM_PROTOCOL,
        "after its end",
    ),
]


@pytest.mark.parametrize(
    ("frames", "kind", "needle"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES]
)
def test_failures_raise(frames: list[Frame], kind: ErrorKind, needle: str) -> None:
    t = translator()
    with pytest.raises(GatewayError) as info:
        for f in frames:
            t.feed(f)
        t.finish()
    assert info.value.kind is kind
    assert needle in info.value.message


def test_events_before_a_failure_were_already_delivered() -> None:
    t = translator()
    assert t.feed(text("partial")[0]) == [TextDelta("partial")]
    with pytest.raises(GatewayError):
        t.feed(exc("ServiceUnavailableException"))


def usage_of(frames: list[Frame], **kw: Any) -> Usage:
    found = [e for e in run(frames, **kw) if isinstance(e, Usage)]
    assert len(found) == 1
    return found[0]


def test_usage_falls_back_to_the_estimate() -> None:
    u = usage_of(text("hello world"), input_tokens=1234)
    assert (u.input_tokens, u.estimated, u.credits, u.context_usage_percent) == (
        1234,
        True,
        None,
        None,
    )
    assert u.output_tokens >= 1


def test_usage_from_context_percentage_and_credits() -> None:
    frames = [
        *text("hi"),
        ev("meteringEvent", {"unit": "credit", "unitPlural": "credits", "usage": 0.25}),
        ev("meteringEvent", {"unit": "credit", "usage": 0.5}),
        ev("contextUsageEvent", {"contextUsagePercentage": 12.5}),
    ]
    u = usage_of(frames, input_tokens=7, context_window=200_000)
    assert u.input_tokens == 25_000
    assert u.credits == 0.75
    assert u.context_usage_percent == 12.5
    assert u.estimated is True


def test_context_window_scales_the_percentage() -> None:
    frames = [*text("hi"), ev("contextUsageEvent", {"contextUsagePercentage": 10})]
    assert usage_of(frames, context_window=1_000_000).input_tokens == 100_000


def test_metadata_usage_is_authoritative() -> None:
    meta = {
        "tokenUsage": {
            "uncachedInputTokens": 900,
            "outputTokens": 42,
            "totalTokens": 1042,
            "cacheReadInputTokens": 100,
            "cacheWriteInputTokens": 0,
            "contextUsagePercentage": 0.52,
        }
    }
    frames = [
        *text("hi"),
        ev("contextUsageEvent", {"contextUsagePercentage": 50}),
        ev("metadataEvent", meta),
    ]
    u = usage_of(frames)
    assert (u.input_tokens, u.output_tokens, u.estimated) == (900, 42, False)
    assert (u.cache_read_input_tokens, u.cache_creation_input_tokens) == (100, 0)
    assert u.context_usage_percent == 0.52


def test_metadata_total_minus_output_when_uncached_missing() -> None:
    meta = {"tokenUsage": {"outputTokens": 10, "totalTokens": 110}}
    u = usage_of([*text("hi"), ev("metadataEvent", meta)])
    assert (u.input_tokens, u.output_tokens, u.estimated) == (100, 10, False)


def test_output_estimate_counts_text_thinking_and_tool_args() -> None:
    small = usage_of(text("ok")).output_tokens
    frames = [
        ev("reasoningContentEvent", {"text": "think " * 50}),
        *text("<thinking>" + "more " * 50 + "</thinking>", "ok"),
        *tool("t1", "a", json.dumps({"body": "x" * 300})),
    ]
    assert usage_of(frames).output_tokens > small + 100


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        (text("a"), 1),
        (text("", ""), 0),
        (text("<think"), 1),
        (tool("t1", "a"), 2),  # start, "{}" args (the end carries no content)
        ([ev("meteringEvent", {"usage": 1})], 0),
    ],
    ids=["text", "empty", "held-then-flushed", "tool", "metering-only"],
)
def test_content_events_counter(frames: list[Frame], expected: int) -> None:
    t = translator()
    for f in frames:
        t.feed(f)
    t.finish()
    assert t.content_events == expected


def test_finish_twice_and_feed_after_finish_are_bugs() -> None:
    t = translator()
    t.finish()
    with pytest.raises(RuntimeError):
        t.finish()
    with pytest.raises(RuntimeError):
        t.feed(text("x")[0])


def test_frames_from_the_real_codec_in_small_pieces() -> None:
    def wire(event_type: str, payload: dict[str, Any]) -> bytes:
        return encode_event(event_type, json.dumps(payload).encode())

    data = b"".join(
        [
            wire(TEXT, {"content": "<thinking>hm</thinking>\n\nHi"}),
            wire(TOOL, {"toolUseId": "t1", "name": "f"}),
            wire(TOOL, {"toolUseId": "t1", "name": "f", "input": '{"a":1}'}),
            wire(TOOL, {"toolUseId": "t1", "name": "f", "stop": True}),
            wire("contextUsageEvent", {"contextUsagePercentage": 1.5}),
        ]
    )
    decoder, t = EventStreamDecoder(), translator()
    out: list[Event] = []
    for i in range(0, len(data), 7):
        for frame in decoder.feed(data[i : i + 7]):
            out += t.feed(frame)
    decoder.finish()
    done = aggregate(out + t.finish())
    assert (done.thinking, done.text, done.stop_reason) == ("hm", "Hi", "tool_use")
    assert [(c.id, c.name, c.arguments) for c in done.tool_calls] == [("t1", "f", '{"a":1}')]
    assert done.usage is not None and done.usage.input_tokens == 3000
