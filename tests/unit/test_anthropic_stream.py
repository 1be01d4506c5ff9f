"""Core events -> the exact Anthropic SSE events (docs/api-compat.md §B.5), and the non-stream
Message built from the same events (docs/api-compat.md §B.4)."""

from __future__ import annotations

from typing import Any

import orjson
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
)
from ki2api.core.tokens import estimate_text_tokens as est
from ki2api.frontends.anthropic.blocks import BlockMachine, usage_object
from ki2api.frontends.anthropic.from_core import PING, MessageEncoder, fold, message_response

START = ("message_start", None)


def parse_sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for chunk in raw.decode().split("\n\n"):
        if not chunk:
            continue
        name_line, data_line = chunk.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        name, data = name_line[7:], orjson.loads(data_line[6:])
        assert data["type"] == name  # the event line always equals the data type
        out.append((name, data))
    return out


def encode(events: list[Event], **kwargs: Any) -> list[tuple[str, dict[str, Any]]]:
    enc = MessageEncoder(message_id="msg_1", model="m", input_tokens=50, **kwargs)
    return parse_sse(b"".join(enc.feed(ev) for ev in events))


def bs(i: int, block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_start", {
        "type": "content_block_start",
        "index": i,
        "content_block": block,
    }


def bd(i: int, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta}


def stop(i: int) -> tuple[str, dict[str, Any]]:
    return "content_block_stop", {"type": "content_block_stop", "index": i}


def text(i: int, t: str) -> tuple[str, dict[str, Any]]:
    return bd(i, {"type": "text_delta", "text": t})


def end(reason: str, out_tokens: int, inp: int = 50, seq: str | None = None) -> list[Any]:
    usage = {
        "input_tokens": inp,
        "output_tokens": out_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "server_tool_use": None,
        "output_tokens_details": None,
    }
    delta = {"stop_reason": reason, "stop_sequence": seq, "stop_details": None, "container": None}
    return [
        ("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}),
        ("message_stop", {"type": "message_stop"}),
    ]


TEXT = {"type": "text", "text": "", "citations": None}
THINK = {"type": "thinking", "thinking": "", "signature": ""}


def tool(tid: str, name: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": tid, "name": name, "input": {}, "caller": {"type": "direct"}}


def js(i: int, frag: str) -> tuple[str, dict[str, Any]]:
    return bd(i, {"type": "input_json_delta", "partial_json": frag})


CASES: list[tuple[str, list[Event], list[Any]]] = [
    (
        "text",
        [TextDelta("Hel"), TextDelta(""), TextDelta("lo"), Usage(40, 3), MessageStop("end_turn")],
        [bs(0, TEXT), text(0, "Hel"), text(0, "lo"), stop(0), *end("end_turn", 3)],
    ),
    (
        "thinking with signature, then text",
        [ThinkingDelta("hm"), ThinkingDelta("", "SIG"), TextDelta("A"), MessageStop("end_turn")],
        [
            bs(0, THINK),
            bd(0, {"type": "thinking_delta", "thinking": "hm"}),
            bd(0, {"type": "signature_delta", "signature": "SIG"}),
            stop(0),
            bs(1, TEXT),
            text(1, "A"),
            stop(1),
            *end("end_turn", est("hmA")),
        ],
    ),
    (
        "thinking without a signature gets an empty signature_delta",
        [ThinkingDelta("hm"), Usage(60, 9, estimated=False), MessageStop("end_turn")],
        [
            bs(0, THINK),
            bd(0, {"type": "thinking_delta", "thinking": "hm"}),
            bd(0, {"type": "signature_delta", "signature": ""}),
            stop(0),
            *end("end_turn", 9, inp=60),
        ],
    ),
    (
        "text then two tool calls; fragments kept, first one empty",
        [
            TextDelta("Let me."),
            ToolCallStart(0, "toolu_a", "read"),
            ToolArgsDelta(0, '{"p":'),
            ToolArgsDelta(0, ""),
            ToolArgsDelta(0, '"x"}'),
            ToolCallEnd(0),
            ToolCallStart(1, "tooluse_b", "ls"),
            ToolArgsDelta(1, "{}"),
            ToolCallEnd(1),
            Usage(10, 7),
            MessageStop("tool_use"),
        ],
        [
            bs(0, TEXT),
            text(0, "Let me."),
            stop(0),
            bs(1, tool("toolu_a", "read")),
            js(1, ""),
            js(1, '{"p":'),
            js(1, '"x"}'),
            stop(1),
            bs(2, tool("tooluse_b", "ls")),
            js(2, ""),
            js(2, "{}"),
            stop(2),
            *end("tool_use", 7),
        ],
    ),
    (
        "tool calls with an end_turn stop report tool_use",
        [
            ToolCallStart(0, "t", "f"),
            ToolArgsDelta(0, "{}"),
            ToolCallEnd(0),
            MessageStop("end_turn"),
        ],
        [bs(0, tool("t", "f")), js(0, ""), js(0, "{}"), stop(0), *end("tool_use", est("f{}"))],
    ),
    (
        "max_tokens cut inside a tool call closes the block",
        [ToolCallStart(0, "t", "f"), ToolArgsDelta(0, '{"a": 1'), MessageStop("max_tokens")],
        [
            bs(0, tool("t", "f")),
            js(0, ""),
            js(0, '{"a": 1'),
            stop(0),
            *end("max_tokens", est('f{"a": 1')),
        ],
    ),
    (
        "context window exceeded",
        [TextDelta("x"), MessageStop("context_window_exceeded")],
        [bs(0, TEXT), text(0, "x"), stop(0), *end("model_context_window_exceeded", est("x"))],
    ),
    (
        "no content at all",
        [Usage(5, 0), MessageStop("max_tokens")],
        end("max_tokens", 0),
    ),
    (
        "events after the stop are ignored",
        [TextDelta("a"), MessageStop("end_turn"), TextDelta("b"), MessageStop("end_turn")],
        [bs(0, TEXT), text(0, "a"), stop(0), *end("end_turn", est("a"))],
    ),
]


@pytest.mark.parametrize(("events", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_stream_events(events: list[Event], expected: list[Any]) -> None:
    got = encode(events)
    name, first = got[0]
    assert name == "message_start"
    assert first["message"] == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "stop_details": None,
        "container": None,
        "usage": usage_object(50, 1, 0, 0),
    }
    assert got[1:] == expected


@pytest.mark.parametrize("events", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_non_stream_is_the_fold_of_the_stream(events: list[Event]) -> None:
    """What the SDK accumulates from the stream equals the non-stream Message."""
    got = encode(events)
    message = got[0][1]["message"]
    partial: dict[int, str] = {}
    for name, data in got[1:]:
        if name == "content_block_start":
            message["content"].append(dict(data["content_block"]))
        elif name == "content_block_delta":
            block, delta = message["content"][data["index"]], data["delta"]
            if delta["type"] == "input_json_delta":
                partial[data["index"]] = partial.get(data["index"], "") + delta["partial_json"]
            else:
                key = {"text_delta": "text", "thinking_delta": "thinking"}.get(delta["type"])
                if key:
                    block[key] += delta[key]
                else:
                    block["signature"] = delta["signature"]
        elif name == "message_delta":
            message.update(data["delta"])
            message["usage"].update(data["usage"])
    for i, raw in partial.items():
        message["content"][i]["input"] = orjson.loads(raw) if raw.endswith("}") else {"a": 1}
    for block in message["content"]:
        if block["type"] == "text":
            block["citations"] = None
    assert message_response(events, message_id="msg_1", model="m", input_tokens=50) == message


def test_stop_sequence_is_reported() -> None:
    events: list[Event] = [TextDelta("ab"), MessageStop("stop_sequence")]
    got = encode(events, stop_sequence=lambda: "END")
    assert got[-2][1]["delta"] == {
        "stop_reason": "stop_sequence",
        "stop_sequence": "END",
        "stop_details": None,
        "container": None,
    }


def test_estimated_usage_never_below_our_estimate() -> None:
    got = encode([TextDelta("a"), Usage(3, 1), MessageStop("end_turn")])
    assert got[-2][1]["usage"]["input_tokens"] == 50
    exact = encode([TextDelta("a"), Usage(3, 1, estimated=False), MessageStop("end_turn")])
    assert exact[-2][1]["usage"]["input_tokens"] == 3


def test_error_after_start_is_one_error_event_then_nothing() -> None:
    enc = MessageEncoder(message_id="msg_1", model="m", input_tokens=1)
    head = parse_sse(enc.feed(TextDelta("a")))
    assert [n for n, _ in head] == ["message_start", "content_block_start", "content_block_delta"]
    err = GatewayError(ErrorKind.UPSTREAM_UNAVAILABLE, "Kiro is overloaded")
    assert parse_sse(enc.error(err)) == [
        (
            "error",
            {
                "type": "error",
                "error": {"type": "overloaded_error", "message": "Kiro is overloaded"},
            },
        )
    ]
    assert enc.finished
    assert enc.error(err) == b"" and enc.feed(TextDelta("b")) == b""


def test_error_rewrite_hook() -> None:
    enc = MessageEncoder(
        message_id="m",
        model="m",
        input_tokens=1,
        on_error=lambda e: GatewayError(ErrorKind.INVALID_REQUEST, "rewritten"),
    )
    enc.feed(TextDelta("a"))
    body = parse_sse(enc.error(GatewayError(ErrorKind.CONTEXT_TOO_LONG, "x")))[0][1]
    assert body["error"] == {"type": "invalid_request_error", "message": "rewritten"}


def test_args_for_a_call_not_open_is_a_protocol_error() -> None:
    enc = MessageEncoder(message_id="m", model="m", input_tokens=1)
    with pytest.raises(GatewayError) as info:
        enc.feed(ToolArgsDelta(3, "{}"))
    assert info.value.kind is ErrorKind.UPSTREAM_PROTOCOL


def test_non_stream_without_a_stop_is_a_protocol_error() -> None:
    with pytest.raises(GatewayError) as info:
        message_response([TextDelta("a")], message_id="m", model="m", input_tokens=1)
    assert info.value.kind is ErrorKind.UPSTREAM_PROTOCOL


def test_ping_event() -> None:
    assert parse_sse(PING) == [("ping", {"type": "ping"})]


def _folded_per_event(events: list[Any]) -> dict[str, Any]:
    """The Message the client of a stream of these events would fold: every delta on its own."""
    machine = BlockMachine(message_id="msg_1", model="m", input_tokens=50)
    stream = [machine.start()]
    for ev in events:
        stream.extend(machine.feed(ev))
    return fold(stream)


WORDS = [TextDelta(w) for w in "The quick brown fox jumps over the lazy dog , again .".split()]


@pytest.mark.parametrize(
    ("name", "events"),
    [
        ("text only, no usage: the output estimate", [*WORDS, MessageStop("end_turn")]),
        ("text with Kiro's usage", [*WORDS, Usage(50, 13), MessageStop("end_turn")]),
        (
            "thinking, text, a tool call, text",
            [
                ThinkingDelta("let me "),
                ThinkingDelta("think", "sig-1"),
                *WORDS[:4],
                ToolCallStart(0, "toolu_1", "lookup"),
                ToolArgsDelta(0, '{"q": '),
                ToolArgsDelta(0, '"x"}'),
                ToolCallEnd(0),
                *WORDS[4:],
                TextDelta(""),
                MessageStop("tool_use"),
            ],
        ),
        ("a cut answer", [*WORDS[:3], MessageStop("max_tokens")]),
    ],
)
def test_a_whole_message_folds_as_its_stream_would(name: str, events: list[Any]) -> None:
    """message_response joins runs of text deltas before the block machine: the Message (text,
    blocks, usage and its output estimate) is the one a streaming client folds."""
    whole = message_response(events, message_id="msg_1", model="m", input_tokens=50)
    assert whole == _folded_per_event(events), name
