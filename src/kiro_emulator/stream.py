"""Turning a planned reply into event-stream frames, sent incrementally (docs/kiro-protocol.md §5).

`build_plan` is pure and lazy (a benchmark may ask for many events on many streams at once);
`stream_body` is the async generator handed to Starlette: it sleeps for the scripted delays and
applies the byte-level faults (mid-stream exception, truncated frame, re-chunking). `StreamFaults`
carries an account's stream faults (docs/emulator.md): no frames, no closing events, a cut frame,
a stall before the first frame or after some.

The shape follows real 2026 streams (docs/kiro-protocol.md §5): `assistantResponseEvent` carries
`modelId` beside `content`; the stream ends with `contextUsageEvent` then `meteringEvent`; on the
kiro-cli flavour (`POST /` with `x-amz-target`) an `initial-response` frame comes first. That frame
is a prelude: it goes out at once, and the scripted delays, stalls, cuts and exception positions
count the answer's frames after it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

import orjson

from ki2api.kiro.stream.codec import encode_event, encode_exception

from .models import KNOWN_MODELS, context_window
from .script import Directives, Reply, ToolCall, split_text

__all__ = ["StreamFaults", "StreamPlan", "build_plan", "stream_body"]

DEFAULT_EXCEPTION_MESSAGE = (
    "Encountered an unexpected error when processing the request, please try again."
)
_RATES = {m.model_id: m.rate for m in KNOWN_MODELS}


def _event(event_type: str, payload: dict[str, Any]) -> bytes:
    return encode_event(event_type, orjson.dumps(payload))


@dataclass(frozen=True)
class StreamFaults:
    empty: bool = False  # 200 with no frames at all
    no_tail: bool = False  # leave out meteringEvent / contextUsageEvent (and metadataEvent)
    truncate_after: int | None = None  # cut frame n in half and end the body
    first_delay_s: float = 0.0  # wait before the first frame
    stall_after: int | None = None  # after n frames go silent for stall_s, then continue
    stall_s: float = 0.0


NO_FAULTS = StreamFaults()


INITIAL_RESPONSE = "initial-response"


@dataclass
class StreamPlan:
    total: int  # whole frames in the undisturbed stream (the prelude included)
    frames: Iterator[bytes]
    prelude: int = 0  # frames sent before the answer (the initial-response), not delayed
    first_delay_s: float = 0.0
    delay_s: float = 0.0
    exception_at: int | None = None
    exception_frame: bytes = b""
    truncate_at: int | None = None
    split_bytes: int | None = None
    stall_at: int | None = None
    stall_s: float = 0.0


def _text_frames(pieces: list[str], count: int, model_id: str) -> Iterator[bytes]:
    for i in range(count):
        yield _text_event(pieces[i % len(pieces)], model_id)


def _text_event(content: str, model_id: str) -> bytes:
    return _event("assistantResponseEvent", {"content": content, "modelId": model_id})


def _tool_frames(call: ToolCall) -> Iterator[bytes]:
    ident = {"name": call.name, "toolUseId": call.tool_use_id}
    yield _event("toolUseEvent", ident)
    for piece in split_text(call.input_json, call.fragments):
        yield _event("toolUseEvent", {"input": piece, **ident})
    if call.stop:
        yield _event(
            "toolUseEvent", {"name": call.name, "stop": True, "toolUseId": call.tool_use_id}
        )


def _text_layout(text: str, d: Directives) -> tuple[list[str], int, int]:
    """(pieces, number of text events, characters sent)."""
    if d.events is None:
        pieces = split_text(text, d.chunks)
        return pieces, len(pieces), len(text)
    pieces = split_text(text, d.events) or [""]
    whole, rest = divmod(d.events, len(pieces))
    return pieces, d.events, whole * len(text) + sum(len(p) for p in pieces[:rest])


def _tail(d: Directives, model_id: str, in_chars: int, out_chars: int) -> list[bytes]:
    in_tokens, out_tokens = max(1, in_chars // 4), max(1, out_chars // 4)
    pct = d.context_usage
    if pct is None:
        pct = round(in_tokens / context_window(model_id) * 100, 4)
    credits = _RATES.get(model_id, 1.0) * (in_tokens / 100_000 + out_tokens / 20_000)
    tail = []
    if d.metadata_usage:
        usage = {
            "uncachedInputTokens": in_tokens,
            "outputTokens": out_tokens,
            "totalTokens": in_tokens + out_tokens,
            "cacheReadInputTokens": 0,
            "cacheWriteInputTokens": 0,
            "contextUsagePercentage": pct,
        }
        tail.append(_event("metadataEvent", {"tokenUsage": usage}))
    metering = {"unit": "credit", "unitPlural": "credits", "usage": round(max(credits, 1e-4), 6)}
    tail.append(_event("contextUsageEvent", {"contextUsagePercentage": pct}))
    tail.append(_event("meteringEvent", metering))  # after contextUsageEvent, as real streams
    return tail


def _exception(d: Directives, content_events: int) -> tuple[int | None, bytes]:
    spec = d.exception
    if spec is None:
        return None, b""
    kind = spec.get("type")
    if not isinstance(kind, str) or not kind:
        kind = "InternalServerException"
    message = spec.get("message")
    payload: dict[str, Any] = {
        "message": message if isinstance(message, str) else DEFAULT_EXCEPTION_MESSAGE
    }
    if isinstance(spec.get("reason"), str):
        payload["reason"] = spec["reason"]
    after = spec.get("after_events")
    at = after if isinstance(after, int) and not isinstance(after, bool) else content_events
    return max(0, at), encode_exception(kind, orjson.dumps(payload))


def _first(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def build_plan(
    reply: Reply,
    d: Directives,
    model_id: str,
    body_chars: int,
    faults: StreamFaults = NO_FAULTS,
    *,
    initial_response: bool = False,
) -> StreamPlan:
    """The frames of one answer; `initial_response` (the `POST /` flavour) puts an
    `initial-response` frame first."""
    if faults.empty:
        return StreamPlan(total=0, frames=iter(()))
    pieces, text_count, out_chars = _text_layout(reply.text, d)
    out_chars += sum(len(r) for r in reply.repeat) + sum(
        len(c.input_json) for c in reply.tool_calls
    )
    tool_count = sum(
        1 + int(c.stop) + len(split_text(c.input_json, c.fragments)) for c in reply.tool_calls
    )
    out_chars += sum(len(r["text"]) for r in reply.reasoning)
    content_events = len(reply.reasoning) + text_count + len(reply.repeat) + tool_count
    tail = [] if faults.no_tail else _tail(d, model_id, body_chars, out_chars)
    prelude = [_event(INITIAL_RESPONSE, {})] if initial_response else []
    frames = chain(
        prelude,
        (_event("reasoningContentEvent", r) for r in reply.reasoning),
        _text_frames(pieces, text_count, model_id),
        (_text_event(r, model_id) for r in reply.repeat),
        chain.from_iterable(_tool_frames(c) for c in reply.tool_calls),
        tail,
    )
    answer = content_events + len(tail)
    skip = len(prelude)
    exception_at, exception_frame = _exception(d, content_events)
    truncate_at = _first(d.truncate_after_events, faults.truncate_after)
    return StreamPlan(
        total=skip + answer,
        frames=frames,
        prelude=skip,
        first_delay_s=max(d.first_delay_s, faults.first_delay_s),
        delay_s=d.delay_s,
        exception_at=None if exception_at is None else skip + exception_at,
        exception_frame=exception_frame,
        truncate_at=None if truncate_at is None else skip + min(truncate_at, answer - 1),
        split_bytes=d.split_bytes,
        stall_at=None if faults.stall_after is None else skip + min(faults.stall_after, answer),
        stall_s=faults.stall_s,
    )


def _scheduled(plan: StreamPlan) -> Iterator[bytes]:
    """The frames with the faults applied: an exception frame ends the stream; a truncation
    sends the first half of a frame and ends the body there."""
    for i, frame in enumerate(plan.frames):
        if i == plan.exception_at:
            yield plan.exception_frame
            return
        if i == plan.truncate_at:
            yield frame[: len(frame) // 2]
            return
        yield frame
    if plan.exception_at is not None:
        yield plan.exception_frame


class _Chunker:
    """Re-chunks the byte stream into pieces of `size` bytes (across frame boundaries)."""

    def __init__(self, size: int | None) -> None:
        self.size = size
        self.buf = bytearray()

    def push(self, data: bytes) -> Iterator[bytes]:
        if self.size is None:
            yield data
            return
        self.buf += data
        while len(self.buf) >= self.size:
            yield bytes(self.buf[: self.size])
            del self.buf[: self.size]

    def flush(self) -> Iterator[bytes]:
        if self.buf:
            yield bytes(self.buf)
            self.buf.clear()


def _delay(plan: StreamPlan, i: int) -> float:
    """Seconds to wait before frame `i` (or, for i == the frame count, before the end)."""
    if i < plan.prelude:
        return 0.0
    delay = plan.first_delay_s if i == plan.prelude else plan.delay_s
    return delay + (plan.stall_s if i == plan.stall_at else 0.0)


async def stream_body(
    plan: StreamPlan, sleep: Callable[[float], Awaitable[Any]]
) -> AsyncIterator[bytes]:
    """Yield the response body piece by piece, sleeping for the scripted delays and stalls."""
    chunker = _Chunker(plan.split_bytes)
    sent = 0
    for i, frame in enumerate(_scheduled(plan)):
        delay = _delay(plan, i)
        if delay > 0:
            for piece in chunker.flush():
                yield piece
            await sleep(delay)
        for piece in chunker.push(frame):
            yield piece
        sent = i + 1
    for piece in chunker.flush():
        yield piece
    if plan.stall_at is not None and sent <= plan.stall_at and plan.stall_s > 0:
        await sleep(plan.stall_s)  # fewer frames than the stall point: go silent before the end
