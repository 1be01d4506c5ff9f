"""ChunkEncoder: core events -> exact SSE chunks (fixtures), decoded with the openai SDK's own
SSE decoder, validated with its `ChatCompletionChunk` model, and accumulated with its
`ChatCompletionStreamState` into the same message `completion_response` gives. A fixture's
`include_reasoning` (default false) is the encoder's flag: the client asked for reasoning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openai._streaming import SSEDecoder
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from ki2api.core import events as core_events
from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.events import Event, MessageStop, aggregate
from ki2api.frontends.openai.from_core import ChunkEncoder, completion_response

FIXTURES = Path(__file__).parents[1] / "fixtures" / "openai" / "stream"
CASES = sorted(FIXTURES.glob("*.json"))
ENVELOPE = {"id": "chatcmpl-test1", "created": 1_700_000_000, "model": "claude-sonnet-4-5"}
FALLBACK = 99


def load_events(raw: list[dict[str, Any]]) -> list[Event]:
    out: list[Event] = []
    for item in raw:
        fields = dict(item)
        cls = getattr(core_events, fields.pop("event"))
        out.append(cls(**fields))
    return out


def encoder(include_usage: bool, include_reasoning: bool = False) -> ChunkEncoder:
    return ChunkEncoder(
        completion_id=ENVELOPE["id"],
        created=ENVELOPE["created"],
        model=ENVELOPE["model"],
        include_usage=include_usage,
        prompt_tokens_fallback=FALLBACK,
        include_reasoning=include_reasoning,
    )


def sse_payloads(stream: bytes, *, split: int = 0) -> list[str]:
    """The data of every event, decoded by the SDK (optionally from `split`-byte pieces)."""
    pieces = [stream[i : i + split] for i in range(0, len(stream), split)] if split else [stream]
    events = list(SSEDecoder().iter_bytes(iter(pieces)))
    assert all(e.event is None for e in events), "OpenAI streams carry no event: lines"
    return [e.data for e in events]


def run(events: list[Event], include_usage: bool, include_reasoning: bool = False) -> bytes:
    enc = encoder(include_usage, include_reasoning)
    out = b"".join(enc.feed(ev) for ev in events)
    assert enc.finished
    return out


def until_stop(events: list[Event]) -> list[Event]:
    end = next(i for i, ev in enumerate(events) if isinstance(ev, MessageStop))
    return events[: end + 1]


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_fixture_chunks(path: Path) -> None:
    case = json.loads(path.read_text())
    include_usage = case["include_usage"]
    reasoning = case.get("include_reasoning", False)
    stream = run(load_events(case["events"]), include_usage, reasoning)
    payloads = sse_payloads(stream)
    assert len(payloads) == len(case["expected"])
    for data, expected in zip(payloads, case["expected"], strict=True):
        if expected == "[DONE]":
            assert data == "[DONE]"
            continue
        chunk = json.loads(data)
        assert {k: chunk[k] for k in ENVELOPE} == ENVELOPE
        assert chunk["object"] == "chat.completion.chunk"
        if "usage" in expected:
            assert chunk["choices"] == [] and chunk["usage"] == expected["usage"]
            continue
        choice = {"index": 0, "logprobs": None, **expected}
        assert chunk["choices"] == [choice]
        assert ("usage" in chunk) is include_usage and chunk.get("usage") is None


@pytest.mark.parametrize("split", [1, 7, 64], ids=["1-byte", "7-bytes", "64-bytes"])
def test_fragmented_delivery_decodes_the_same(split: int) -> None:
    case = json.loads((FIXTURES / "two_parallel_tool_calls.json").read_text())
    stream = run(load_events(case["events"]), include_usage=True)
    assert sse_payloads(stream, split=split) == sse_payloads(stream)


def accumulate(stream: bytes) -> tuple[ChatCompletionStreamState[Any], list[ChatCompletionChunk]]:
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    chunks = []
    for data in sse_payloads(stream):
        if data == "[DONE]":
            break
        chunk = ChatCompletionChunk.model_validate(json.loads(data))
        state.handle_chunk(chunk)
        chunks.append(chunk)
    return state, chunks


@pytest.mark.parametrize("include_usage", [True, False], ids=["usage", "no-usage"])
@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_sdk_accumulation_matches_non_stream(path: Path, include_usage: bool) -> None:
    case = json.loads(path.read_text())
    events = until_stop(load_events(case["events"]))
    reasoning = case.get("include_reasoning", False)
    state, chunks = accumulate(run(events, include_usage, reasoning))
    # get_final_completion() refuses finish "length"; the snapshot is the same accumulation.
    streamed = state.current_completion_snapshot.model_dump(mode="json")
    whole = completion_response(
        aggregate(events),
        completion_id=ENVELOPE["id"],
        created=ENVELOPE["created"],
        model=ENVELOPE["model"],
        prompt_tokens_fallback=FALLBACK,
        include_reasoning=reasoning,
    )
    expected = ChatCompletion.model_validate(whole).model_dump(mode="json")
    got_msg, want_msg = streamed["choices"][0]["message"], expected["choices"][0]["message"]
    # The role chunk carries content "" (docs/api-compat.md §A.6), so a tool-only stream
    # accumulates "" where the non-stream message says null; both mean "no text".
    assert (got_msg.pop("content") or None) == (want_msg.pop("content") or None)
    got_msg.pop("parsed", None)
    for call in got_msg.get("tool_calls") or []:
        call["function"].pop("parsed_arguments", None)
        call.pop("index")  # the stream's merge key, kept by the SDK as an extra field
    want_msg["annotations"] = got_msg.get("annotations")
    assert got_msg == want_msg
    assert streamed["choices"][0]["finish_reason"] == expected["choices"][0]["finish_reason"]
    assert [c.choices[0].delta.role for c in chunks if c.choices].count("assistant") == 1
    assert streamed["usage"] == (expected["usage"] if include_usage else None)
    assert {k: streamed[k] for k in ENVELOPE} == ENVELOPE


def test_error_after_start_is_one_event_without_done_or_finish() -> None:
    enc = encoder(include_usage=True)
    started = enc.feed(core_events.TextDelta("partial"))
    failure = enc.error(GatewayError(ErrorKind.UPSTREAM_TIMEOUT, "Kiro went quiet"))
    assert enc.finished
    payloads = sse_payloads(failure)
    assert payloads == [
        json.dumps(
            {
                "error": {
                    "message": "Kiro went quiet",
                    "type": "server_error",
                    "param": None,
                    "code": "upstream_timeout",
                }
            },
            separators=(",", ":"),
        )
    ]
    assert b"[DONE]" not in started + failure and b'finish_reason":"' not in started + failure
    assert enc.feed(core_events.MessageStop("end_turn")) == b""
    assert enc.error(GatewayError(ErrorKind.INTERNAL, "again")) == b""


def test_error_before_any_event_has_no_role_chunk() -> None:
    enc = encoder(include_usage=False)
    out = enc.error(GatewayError(ErrorKind.INTERNAL, "Traceback: secret detail"))
    [data] = sse_payloads(out)
    assert json.loads(data)["error"]["type"] == "server_error"
    assert "secret" not in data


def test_error_after_stop_sends_nothing() -> None:
    enc = encoder(include_usage=False)
    enc.feed(MessageStop("end_turn"))
    assert enc.error(GatewayError(ErrorKind.UPSTREAM_ERROR, "late")) == b""


def test_finished_only_after_stop() -> None:
    enc = encoder(include_usage=False)
    assert not enc.finished
    enc.feed(core_events.TextDelta("x"))
    assert not enc.finished
    enc.feed(MessageStop("end_turn"))
    assert enc.finished


@pytest.mark.parametrize(
    "events",
    [
        [core_events.ToolArgsDelta(0, "{}")],
        [core_events.ToolCallStart(0, "call_1", "f"), core_events.ToolArgsDelta(1, "{}")],
        [core_events.ToolCallStart(0, "call_1", "f"), core_events.ToolCallStart(0, "call_1", "f")],
    ],
    ids=["args-before-start", "args-for-unknown-index", "started-twice"],
)
def test_malformed_tool_events_are_protocol_errors(events: list[Event]) -> None:
    enc = encoder(include_usage=False)
    with pytest.raises(GatewayError) as info:
        for ev in events:
            enc.feed(ev)
    assert info.value.kind is ErrorKind.UPSTREAM_PROTOCOL


def test_usage_fallback_when_upstream_reports_none() -> None:
    events = [core_events.ThinkingDelta("hmm " * 20), core_events.TextDelta("answer " * 30)]
    stream = run([*events, MessageStop("end_turn")], include_usage=True)
    usage = json.loads(sse_payloads(stream)[-2])["usage"]
    assert usage["prompt_tokens"] == FALLBACK
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    assert 0 < reasoning < usage["completion_tokens"]
    assert usage["total_tokens"] == FALLBACK + usage["completion_tokens"]


def test_fallback_estimate_does_not_depend_on_fragmentation() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 10
    whole = run([core_events.TextDelta(text), MessageStop("end_turn")], include_usage=True)
    pieces = [core_events.TextDelta(c) for c in text]
    split = run([*pieces, MessageStop("end_turn")], include_usage=True)
    assert sse_payloads(whole)[-2] == sse_payloads(split)[-2]
