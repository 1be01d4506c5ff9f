"""The streaming hot path's one-step cases agree with the general path they shortcut.

Each fast path (decoder: a headers block recognised in place; translator: text while nothing is
held back, `feed_raw`; limiter: text without stop strings, `feed_batch`; encoders: a delta
written around pre-encoded bytes) is run against the general code on tricky inputs: unicode
split across reads, empty content, tool events interleaved, exception frames, corrupt CRCs.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from typing import Any

import orjson
import pytest

from ki2api.core.errors import GatewayError
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
from ki2api.core.stream_limits import StreamLimiter
from ki2api.frontends.anthropic.blocks import BlockMachine
from ki2api.frontends.anthropic.from_core import MessageEncoder
from ki2api.frontends.openai.from_core import ChunkEncoder
from ki2api.frontends.sse import sse_data, sse_event
from ki2api.kiro.stream.codec import (
    EventStreamDecoder,
    Frame,
    MessageCRCError,
    PreludeCRCError,
    RawFrame,
    encode_event,
    encode_exception,
    encode_frame,
    frame_of,
)
from ki2api.kiro.stream.translate import KiroStreamTranslator

TRICKY = [
    "word ",
    "",
    "é",
    "文字",
    "🚀 x",
    'quote " and \\ back',
    "line\nbreak\t\x01",
    "\u2028\u2029",
]


def text_frame(content: Any) -> bytes:
    return encode_event("assistantResponseEvent", orjson.dumps({"content": content}))


def tool_event(payload: dict[str, Any]) -> bytes:
    return encode_event("toolUseEvent", orjson.dumps(payload))


def tool_frames(tool_id: str, *fragments: str) -> list[bytes]:
    ident = {"name": "get_weather", "toolUseId": tool_id}
    out = [encode_event("toolUseEvent", orjson.dumps(ident))]
    out += [encode_event("toolUseEvent", orjson.dumps({"input": f, **ident})) for f in fragments]
    return [*out, encode_event("toolUseEvent", orjson.dumps({**ident, "stop": True}))]


STREAMS: dict[str, list[bytes]] = {
    "plain text": [text_frame(t) for t in TRICKY * 3],
    "thinking first": [text_frame(t) for t in ["<thin", "king>plan", "</thinking>", "\n\nhi", "x"]],
    "whitespace then text": [text_frame(t) for t in ["  ", "\n", "ok", ""]],
    "tool between text": [
        text_frame("before "),
        *tool_frames("t1", '{"a": "é', '文"}'),
        text_frame("after"),
        *tool_frames("t2", "{}"),
        text_frame("end"),
    ],
    "missing and null content": [
        encode_event("assistantResponseEvent", b"{}"),
        encode_event("assistantResponseEvent", b'{"content": null}'),
        text_frame("x"),
    ],
    "other events": [
        text_frame("a"),
        encode_event("meteringEvent", b'{"usage": 0.5}'),
        encode_event("contextUsageEvent", b'{"contextUsagePercentage": 2.5}'),
        encode_event("unknownEvent", b"not json"),
        text_frame("b"),
    ],
    "content-length exception": [
        text_frame("a"),
        encode_exception("ContentLengthExceededException", b'{"message": "too long"}'),
    ],
    "throttling exception": [
        text_frame("a"),
        encode_exception("ThrottlingException", b'{"message": "slow down"}'),
    ],
    "content of the wrong type": [text_frame("a"), text_frame(5)],
    "wrapped text": [
        text_frame("a"),
        encode_event("assistantResponseEvent", b'{"assistantResponseEvent": {"content": "b"}}'),
        encode_event("assistantResponseEvent", b'{"assistantResponseEvent": 1, "content": "c"}'),
    ],
    "text that is not JSON": [text_frame("a"), encode_event("assistantResponseEvent", b"{")],
    "text that is a list": [text_frame("a"), encode_event("assistantResponseEvent", b"[1]")],
    "tool events of every shape": [
        tool_event({"toolUseId": "t1", "name": "f"}),
        tool_event({"toolUseId": "t1", "name": "f", "input": '{"a"'}),
        tool_event({"toolUseEvent": {"toolUseId": "t1", "name": "f", "input": ": 1"}}),
        tool_event({"toolUseId": "t1", "input": ", "}),
        tool_event({"toolUseId": "t1", "name": "f", "input": ""}),
        tool_event({"toolUseId": "t1", "name": "f", "input": '"b": 2', "stop": False}),
        tool_event({"toolUseId": "t1", "name": "f", "input": "}", "stop": True}),
        tool_event({"toolUseId": "t1", "name": "f", "stop": True}),
        tool_event({"toolUseId": "t2", "name": "g"}),
        tool_event({"toolUseId": "t2", "name": "g", "input": {"x": [1, "é"]}}),
        tool_event({"name": "g", "input": ""}),
        tool_event({"toolUseId": "t3", "name": "h", "input": "{}"}),
        tool_event({"toolUseId": "t2", "name": "g", "input": "{}"}),
    ],
    "tool name of the wrong type": [
        tool_event({"toolUseId": "t1", "name": "f"}),
        tool_event({"toolUseId": "t1", "name": 5, "input": "{}"}),
    ],
    "tool stop of the wrong type": [
        tool_event({"toolUseId": "t1", "name": "f"}),
        tool_event({"toolUseId": "t1", "name": "f", "input": "{}", "stop": 1}),
    ],
    "tool input cut off": [*tool_frames("t1", '{"a": ')[:-1]],
}


class GeneralTranslator(KiroStreamTranslator):
    """The translator with its one-step paths switched off: every frame through `_feed`."""

    def feed_raw(self, frames: Iterable[RawFrame], out: list[Event]) -> None:
        if self._finished:
            raise RuntimeError("feed() after finish()")
        for raw in frames:
            out += self._feed(frame_of(raw))


def translate(translator: KiroStreamTranslator, reads: list[bytes], batch: bool) -> list[Any]:
    """Events (and the error that ended them, as its message) of the reads, as a list."""
    decoder = EventStreamDecoder()
    out: list[Any] = []
    try:
        for read in reads:
            if batch:
                translator.feed_raw(decoder.feed_raw(read), out)
            else:
                for frame in decoder.feed(read):
                    out += translator.feed(frame)
        decoder.finish()
        out += translator.finish()
    except GatewayError as err:
        out.append(("error", err.kind, err.message))
    return [*out, ("content events", translator.content_events)]


def split_reads(data: bytes, seed: int) -> list[bytes]:
    """`data` cut at random places (inside frames, inside multi-byte characters)."""
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, 6)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@pytest.mark.parametrize("name", STREAMS)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("single", [False, True])
def test_translator_fast_path_agrees(name: str, seed: int, single: bool) -> None:
    reads = split_reads(b"".join(STREAMS[name]), seed)
    ids = iter(f"id{i}" for i in range(100))

    def new(kind: type[KiroStreamTranslator]) -> KiroStreamTranslator:
        return kind(input_tokens=5, single_tool_call=single, id_factory=lambda: next(ids))

    expected = translate(new(GeneralTranslator), reads, batch=False)
    ids = iter(f"id{i}" for i in range(100))
    assert translate(new(KiroStreamTranslator), reads, batch=False) == expected
    ids = iter(f"id{i}" for i in range(100))
    assert translate(new(KiroStreamTranslator), reads, batch=True) == expected


def test_feed_raw_keeps_the_events_before_a_failure() -> None:
    decoder = EventStreamDecoder()
    frames = decoder.feed_raw(text_frame("a") + text_frame("b") + text_frame(["not", "text"]))
    out: list[Event] = []
    with pytest.raises(GatewayError):
        KiroStreamTranslator(input_tokens=1).feed_raw(frames, out)
    assert out == [TextDelta("a"), TextDelta("b")]


# -- decoder ------------------------------------------------------------------------------


def typed_frame(event_type: str, payload: bytes) -> bytes:
    return encode_frame([(":event-type", event_type), (":message-type", "event")], payload)


def test_decoder_tells_same_length_header_blocks_apart() -> None:
    """Blocks of one length but different bytes (`aaaa` / `bbbb`) are never mistaken."""
    data = b"".join(
        typed_frame(t, b"%d" % i) for i, t in enumerate(["aaaa", "bbbb", "aaaa", "aaab"])
    )
    for size in (1, 7, len(data)):
        decoder = EventStreamDecoder()
        frames = [f for i in range(0, len(data), size) for f in decoder.feed(data[i : i + size])]
        assert [(f.event_type, f.payload) for f in frames] == [
            ("aaaa", b"0"),
            ("bbbb", b"1"),
            ("aaaa", b"2"),
            ("aaab", b"3"),
        ]
        assert all(f.message_type == "event" for f in frames)


@pytest.mark.parametrize(
    ("offset", "error"), [(-1, MessageCRCError), (-10, MessageCRCError), (2, PreludeCRCError)]
)
def test_decoder_fails_closed_on_a_corrupt_repeated_frame(offset: int, error: type) -> None:
    """A corrupt frame whose headers block was cached a frame earlier still fails its check."""
    good = text_frame("a")
    bad = bytearray(good)
    bad[offset] ^= 0x01
    decoder = EventStreamDecoder()
    assert len(decoder.feed(good)) == 1
    with pytest.raises(error):
        decoder.feed(bytes(bad))


def test_hand_built_frame_types_match_decoded() -> None:
    data = text_frame("a") + encode_exception("X", b"{}")
    decoded = EventStreamDecoder().feed(data)
    built = [Frame(headers=dict(f.headers), payload=f.payload) for f in decoded]
    assert [(f.message_type, f.event_type) for f in built] == [
        ("event", "assistantResponseEvent"),
        ("exception", None),
    ]
    assert [(f.message_type, f.event_type) for f in decoded] == [
        (f.message_type, f.event_type) for f in built
    ]
    assert Frame(headers={":message-type": 5}, payload=b"").message_type == "event"


# -- limiter ------------------------------------------------------------------------------

LIMITED: list[Event] = [
    *(TextDelta(t) for t in TRICKY * 4),
    ThinkingDelta("hmm"),
    TextDelta("more text " * 5),
    ToolCallStart(0, "t1", "get_weather"),
    ToolArgsDelta(0, '{"a": 1}'),
    ToolCallEnd(0),
    Usage(input_tokens=3, output_tokens=40, estimated=False),
    MessageStop("end_turn"),
]


def limited(events: list[Event], max_tokens: int | None, stop: list[str], batch: bool) -> Any:
    limiter = StreamLimiter(max_tokens=max_tokens, stop=stop, input_tokens=3)
    if batch:
        return limiter.feed_batch(events)
    out: list[Event] = []
    for event in events:
        out += limiter.feed(event)
    return out


@pytest.mark.parametrize("max_tokens", [1, 2, 5, 9, 20, 40, 4096])
def test_limiter_fast_path_agrees(max_tokens: int | None) -> None:
    """No stop strings (one step per text event) equals a stop string that never matches."""
    general = limited(LIMITED, max_tokens, ["\x00never"], batch=False)
    fast = limited(LIMITED, max_tokens, [], batch=False)
    assert fast == general
    assert limited(LIMITED, max_tokens, [], batch=True) == general
    assert limited(LIMITED, max_tokens, ["xt", "🚀"], batch=True) == limited(
        LIMITED, max_tokens, ["xt", "🚀"], batch=False
    )


def test_limiter_without_limits_passes_the_batch_itself() -> None:
    batch: list[Event] = [TextDelta("a")]
    assert StreamLimiter(max_tokens=None, stop=[]).feed_batch(batch) is batch


# -- encoders -----------------------------------------------------------------------------

MODELS = ["gpt-4o", 'we"ird\\model \u0000delta\u0000', "模型"]


def openai_general(events: list[Event], model: str, include_usage: bool) -> bytes:
    """The chunks as `sse_data` of the whole chunk object (what the encoder did before)."""
    envelope = {"id": "c1", "object": "chat.completion.chunk", "created": 7, "model": model}

    def chunk(delta: dict[str, Any]) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}
        body: dict[str, Any] = {**envelope, "choices": [choice]}
        if include_usage:
            body["usage"] = None
        return sse_data(body)

    out = [chunk({"role": "assistant", "content": ""})]
    calls: dict[int, int] = {}
    for e in events:
        if isinstance(e, TextDelta) and e.text:
            out.append(chunk({"content": e.text}))
        elif isinstance(e, ToolCallStart):
            k = calls[e.index] = len(calls)
            function = {"name": e.name, "arguments": ""}
            call = {"index": k, "id": e.id, "type": "function", "function": function}
            out.append(chunk({"tool_calls": [call]}))
        elif isinstance(e, ToolArgsDelta) and e.fragment:
            args = {"index": calls[e.index], "function": {"arguments": e.fragment}}
            out.append(chunk({"tool_calls": [args]}))
    return b"".join(out)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("include_usage", [True, False])
def test_openai_content_and_argument_chunks_are_byte_identical(
    model: str, include_usage: bool
) -> None:
    events: list[Event] = [TextDelta(t) for t in TRICKY]
    events += [ToolCallStart(3, "t1", "f"), *(ToolArgsDelta(3, t) for t in TRICKY)]
    events += [ToolCallStart(5, "t2", "g"), *(ToolArgsDelta(5, t) for t in TRICKY)]
    encoder = ChunkEncoder(
        completion_id="c1",
        created=7,
        model=model,
        include_usage=include_usage,
        prompt_tokens_fallback=1,
    )
    sent = b"".join(encoder.feed(e) for e in events)
    assert sent == openai_general(events, model, include_usage)
    for line in sent.split(b"\n\n")[:-1]:
        assert json.loads(line.removeprefix(b"data: "))["model"] == model


ANTHROPIC: list[Event] = [
    ThinkingDelta("plan "),
    ThinkingDelta("é文🚀"),
    ThinkingDelta("", "sig"),
    *(TextDelta(t) for t in TRICKY),
    ToolCallStart(0, "t1", "get_weather"),
    ToolArgsDelta(0, '{"a": "'),
    ToolArgsDelta(0, ""),
    ToolArgsDelta(0, 'é\\"}'),
    ToolCallEnd(0),
    TextDelta("after"),
    Usage(input_tokens=3, output_tokens=40, estimated=False),
    MessageStop("end_turn"),
]


def test_anthropic_stream_is_byte_identical_to_the_block_machine() -> None:
    machine = BlockMachine(message_id="m1", model="claude", input_tokens=3)
    expected = [machine.start()]
    for event in ANTHROPIC:
        expected += machine.feed(event)
    encoder = MessageEncoder(message_id="m1", model="claude", input_tokens=3)
    sent = b"".join(encoder.feed(e) for e in ANTHROPIC)
    assert sent == b"".join(sse_event(name, payload) for name, payload in expected)
    assert encoder.finished


def test_anthropic_args_for_a_call_not_open_still_fail() -> None:
    encoder = MessageEncoder(message_id="m1", model="claude", input_tokens=3)
    encoder.feed(ToolCallStart(0, "t1", "f"))
    with pytest.raises(GatewayError):
        encoder.feed(ToolArgsDelta(1, "{}"))


MIXED: list[Event] = [
    *(TextDelta(t) for t in TRICKY * 3),
    ThinkingDelta(""),
    ThinkingDelta("é" * 30),
    ToolCallStart(0, "t1", "get_weather"),
    *(ToolArgsDelta(0, f) for f in ['{"a": ', "", '"文字', '"}']),
    ToolCallEnd(0),
    Usage(input_tokens=3, output_tokens=9, estimated=False),
    *(TextDelta(t) for t in TRICKY * 3),
]


@pytest.mark.parametrize("max_tokens", [1, 2, 5, 9, 20, 40, 60, 100, 4096])
@pytest.mark.parametrize("size", [1, 3, 7, 100])
@pytest.mark.parametrize("kind", ["text", "mixed"])
def test_limiter_batches_agree(max_tokens: int, size: int, kind: str) -> None:
    """Batches (counted in one step while far from the cap) end where single events do, with
    the same usage."""
    events: list[Event] = [TextDelta(t) for t in TRICKY * 6] if kind == "text" else [*MIXED]
    events += [Usage(input_tokens=3, output_tokens=9, estimated=False), MessageStop("end_turn")]
    batched = StreamLimiter(max_tokens=max_tokens, stop=[], input_tokens=3)
    out: list[Event] = []
    for i in range(0, len(events), size):
        out += batched.feed_batch(events[i : i + size])
    assert out == limited(events, max_tokens, [], batch=False)


def test_parsed_headers_shared_between_decoders_stay_unchanged() -> None:
    """The parsed headers are shared by every decoder: a frame's headers are its own copy."""
    first = EventStreamDecoder().feed(text_frame("a"))[0]
    first.headers[":event-type"] = "changed"
    second = EventStreamDecoder().feed(text_frame("b"))[0]
    assert second.headers[":event-type"] == "assistantResponseEvent"
    assert second.event_type == "assistantResponseEvent"
    head, payload = EventStreamDecoder().feed_raw(text_frame("c"))[0]
    with pytest.raises(TypeError):
        head.values[":event-type"] = "x"  # type: ignore[index]
    assert payload == b'{"content":"c"}'


def test_feed_all_equals_feed_one_by_one() -> None:
    events: list[Event] = [*ANTHROPIC[:-2], TextDelta("x"), *ANTHROPIC[-2:], TextDelta("late")]

    def openai() -> ChunkEncoder:
        return ChunkEncoder(
            completion_id="c1",
            created=7,
            model="m",
            include_usage=True,
            prompt_tokens_fallback=1,
            include_reasoning=True,
        )

    def anthropic() -> MessageEncoder:
        return MessageEncoder(message_id="m1", model="claude", input_tokens=3)

    for new in (openai, anthropic):
        one, batched = new(), new()
        expected = b"".join(one.feed(e) for e in events)
        assert b"".join(batched.feed_all(events[i : i + 4]) for i in range(0, len(events), 4)) == (
            expected
        )
        assert batched.finished
