"""Per-event CPU of the streaming hot path, without the network: upstream bytes -> SSE bytes.

The same stages a streamed answer goes through in the gateway, called in the same way:
`EventStreamDecoder.feed_raw` on each upstream read and `KiroStreamTranslator.feed_raw` on its
frames (in older code, which had neither: `feed` and `feed` on each frame),
`server.shaping`'s batch step (the `StreamLimiter`) when the request has `max_tokens`, and the
frontend's encoder (`ChunkEncoder` or `MessageEncoder`) on each read's events (`feed_all`; older
code: `feed` per event, joined). The answers are the emulator's (`kiro_emulator.stream`):
`assistantResponseEvent`s of `"word "` (what `bench` and the profile request) then
`contextUsageEvent` and `meteringEvent`, arriving in a few large reads; and a tool-call answer
(some text, then one call whose arguments come in many fragments).

Each case runs at `SMALL` and `LARGE` events; µs per additional event is the slope between the
two, µs per answer is the `SMALL` (100-event) figure. Timings are CPU time of this process,
the minimum over repeats (the machine is shared: the minimum is the least disturbed figure).
The same script measures older code: run it from a checkout of that code (see `_shaped`,
`_encode`, `run_answer`: each stage falls back to the calls that code had).

    .venv/bin/python -m bench.pipeline [--repeats N] [--json] [-k NAME]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from ki2api.core.events import Event
from ki2api.core.stream_limits import StreamLimiter
from ki2api.core.tokens import estimate_text_tokens
from ki2api.frontends.anthropic.from_core import MessageEncoder
from ki2api.frontends.openai.from_core import ChunkEncoder
from ki2api.kiro.stream.codec import EventStreamDecoder, encode_event
from ki2api.kiro.stream.translate import KiroStreamTranslator
from ki2api.server import shaping

__all__ = ["CASES", "Case", "main", "measure", "run_answer"]

MODEL = "claude-sonnet-4-20250514"
SMALL, LARGE = 100, 1000
READ_BYTES = 16_384  # the emulator's 100-event answer arrives in a few reads of this order
MAX_TOKENS = 4096


def _event(event_type: str, payload: dict[str, object]) -> bytes:
    return encode_event(event_type, orjson.dumps(payload))


def _tail() -> list[bytes]:
    metering = {"unit": "credit", "unitPlural": "credits", "usage": 0.0123}
    return [
        _event("contextUsageEvent", {"contextUsagePercentage": 0.0121}),
        _event("meteringEvent", metering),
    ]


def text_answer(events: int) -> bytes:
    """The emulator's answer to `{"text": "word " * events, "events": events}`."""
    frame = _event("assistantResponseEvent", {"content": "word ", "modelId": MODEL})
    return b"".join([frame] * events + _tail())


def tool_answer(events: int) -> bytes:
    """A few text events, then one tool call whose arguments fill the rest of `events`."""
    text = [_event("assistantResponseEvent", {"content": "Let me look. ", "modelId": MODEL})] * 4
    ident: dict[str, object] = {
        "name": "get_weather",
        "toolUseId": "tooluse_0123456789abcdefghijkl",
    }
    pieces = ['{"location": "Paris", "notes": "'] + ["ab cd "] * (events - 7) + ['"}']
    args = [_event("toolUseEvent", {"input": p, **ident}) for p in pieces]
    stop = _event("toolUseEvent", {**ident, "stop": True})
    return b"".join([*text, _event("toolUseEvent", ident), *args, stop, *_tail()])


def _reads(data: bytes) -> list[bytes]:
    return [data[i : i + READ_BYTES] for i in range(0, len(data), READ_BYTES)]


def _limiter(max_tokens: int | None) -> StreamLimiter | None:
    if max_tokens is None:
        return None
    return StreamLimiter(
        max_tokens=max_tokens,
        stop=(),
        input_tokens=20,
        count_tokens=functools.partial(estimate_text_tokens, model_id=MODEL),
    )


def _encoder(dialect: str) -> ChunkEncoder | MessageEncoder:
    if dialect == "openai":
        return ChunkEncoder(
            completion_id="chatcmpl-0123456789abcdef01234567",
            created=1_760_000_000,
            model=MODEL,
            include_usage=True,
            prompt_tokens_fallback=20,
        )
    return MessageEncoder(message_id="msg_0123456789abcdef01234567", model=MODEL, input_tokens=20)


def _shaped(events: list[Event], limiter: StreamLimiter | None) -> list[Event]:
    """What `shaping._shaped` does to one batch (synchronously); older code had no
    `_apply_batch`, so that the same script measures it too."""
    if limiter is None:
        return events
    apply_batch = getattr(shaping, "_apply_batch", None)
    if apply_batch is not None:
        out: list[Event] = apply_batch(events, limiter, None)
        return out
    out = []
    for event in events:
        out.extend(shaping._apply(event, limiter, None))
        if limiter.done:
            break
    return out


def _encode(encoder: ChunkEncoder | MessageEncoder, events: list[Event]) -> bytes:
    """The SSE bytes of one batch, as `server.streaming` writes them (older code: per event)."""
    feed_all = getattr(encoder, "feed_all", None)
    if feed_all is not None:
        out: bytes = feed_all(events)
        return out
    return b"".join([encoder.feed(ev) for ev in events])


def run_answer(reads: list[bytes], dialect: str, max_tokens: int | None) -> bytes:
    """One answer through decoder, translator, limiter and encoder: the SSE bytes sent."""
    decoder = EventStreamDecoder()
    translator = KiroStreamTranslator(input_tokens=20, context_window=200_000)
    limiter = _limiter(max_tokens)
    encoder = _encoder(dialect)
    sent: list[bytes] = []
    fused = hasattr(translator, "feed_raw")  # what `kiro.backend` calls (older code: per frame)
    for read in reads:
        batch: list[Event] = []
        if fused:
            translator.feed_raw(decoder.feed_raw(read), batch)
        else:
            for frame in decoder.feed(read):
                batch.extend(translator.feed(frame))
        sent.append(_encode(encoder, _shaped(batch, limiter)))
        if limiter is not None and limiter.done:
            return b"".join(sent)
    decoder.finish()
    sent.append(_encode(encoder, _shaped(translator.finish(), limiter)))
    return b"".join(sent)


@dataclass(frozen=True)
class Case:
    name: str
    dialect: str
    max_tokens: int | None
    answer: Callable[[int], bytes]


CASES = (
    Case("openai text, max_tokens", "openai", MAX_TOKENS, text_answer),
    Case("openai text, no max_tokens", "openai", None, text_answer),
    Case("anthropic text, max_tokens", "anthropic", MAX_TOKENS, text_answer),
    Case("anthropic text, no max_tokens", "anthropic", None, text_answer),
    Case("openai tool call, max_tokens", "openai", MAX_TOKENS, tool_answer),
    Case("anthropic tool call, max_tokens", "anthropic", MAX_TOKENS, tool_answer),
)


def _time_answer(case: Case, events: int, repeats: int) -> float:
    """Seconds for one answer of `events` events: the minimum over `repeats` rounds."""
    reads = _reads(case.answer(events))
    loops = max(1, 20_000 // events)
    best = float("inf")
    run_answer(reads, case.dialect, case.max_tokens)  # warm caches (the tokenizer's vocabulary)
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(loops):
            run_answer(reads, case.dialect, case.max_tokens)
        best = min(best, (time.process_time() - start) / loops)
    return best


def measure(case: Case, repeats: int) -> dict[str, float]:
    """µs per 100-event answer and per additional event (the slope from SMALL to LARGE)."""
    small = _time_answer(case, SMALL, repeats)
    large = _time_answer(case, LARGE, repeats)
    return {
        "us_per_answer": small * 1e6,
        "us_per_event": (large - small) / (LARGE - SMALL) * 1e6,
        "us_per_large_answer": large * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("-k", default="", help="only the cases whose name contains this")
    args = parser.parse_args(argv)
    results = {c.name: measure(c, args.repeats) for c in CASES if args.k in c.name}
    if args.json:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"{'case':34} {'us/100-event answer':>20} {'us/extra event':>15}")
    for name, r in results.items():
        print(f"{name:34} {r['us_per_answer']:20.1f} {r['us_per_event']:15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
