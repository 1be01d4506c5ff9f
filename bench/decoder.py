"""Decoder throughput: our `EventStreamDecoder` against botocore's `EventStreamBuffer`.

Both decode the same bytes: a typical Kiro reply stream (mostly short `assistantResponseEvent`
frames, a few tool-use frames, metering and context usage), fed in fixed-size pieces as a socket
would deliver them. Both must produce the same frames (checked before timing).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import orjson
from botocore.eventstream import EventStreamBuffer

from ki2api.kiro.stream.codec import EventStreamDecoder, encode_event

__all__ = ["kiro_stream", "measure_decoders"]

_WORDS = (
    "the gateway streams each event as soon as the frame is complete, so the client sees "
    "text while the model is still writing; tool calls arrive as JSON fragments that are "
    "joined before use. Ünïcödé 文字 and emoji 🚀 appear too."
).split()


def _text_payload(rng: random.Random) -> bytes:
    words = rng.choices(_WORDS, k=rng.randint(1, 12))
    return orjson.dumps({"content": " ".join(words) + " "})


def _tool_payloads(rng: random.Random, index: int) -> list[bytes]:
    tool_id = f"tooluse_{index:022d}"
    start = {"name": "get_weather", "toolUseId": tool_id}
    pieces = ['{"loc', 'ation": "Par', 'is", "unit', '": "celsius"}']
    middle = [{"input": p, "name": "get_weather", "toolUseId": tool_id} for p in pieces]
    stop = {"name": "get_weather", "stop": True, "toolUseId": tool_id}
    return [orjson.dumps(x) for x in (start, *middle, stop)]


def kiro_stream(frames: int, seed: int = 7) -> bytes:
    """`frames` typical frames (about 1 in 50 starts a 6-frame tool call), then the trailer."""
    rng = random.Random(seed)
    out: list[bytes] = []
    while len(out) < frames - 2:
        if rng.random() < 0.02:
            out += [encode_event("toolUseEvent", p) for p in _tool_payloads(rng, len(out))]
        else:
            out.append(encode_event("assistantResponseEvent", _text_payload(rng)))
    out = out[: frames - 2]
    usage = {"unit": "credit", "unitPlural": "credits", "usage": 0.0123}
    out.append(encode_event("meteringEvent", orjson.dumps(usage)))
    out.append(encode_event("contextUsageEvent", orjson.dumps({"contextUsagePercentage": 1.5})))
    return b"".join(out)


def _split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _ours(pieces: list[bytes]) -> list[tuple[dict[str, Any], bytes]]:
    decoder = EventStreamDecoder()
    out: list[tuple[dict[str, Any], bytes]] = []
    for piece in pieces:
        out += [(dict(f.headers), f.payload) for f in decoder.feed(piece)]
    decoder.finish()
    return out


def _botocore(pieces: list[bytes]) -> list[tuple[dict[str, Any], bytes]]:
    buffer = EventStreamBuffer()
    out: list[tuple[dict[str, Any], bytes]] = []
    for piece in pieces:
        buffer.add_data(piece)
        out += [(dict(m.headers), m.payload) for m in buffer]
    return out


def _time_ours(pieces: list[bytes]) -> int:
    decoder = EventStreamDecoder()
    n = 0
    for piece in pieces:
        n += len(decoder.feed(piece))
    decoder.finish()
    return n


def _time_botocore(pieces: list[bytes]) -> int:
    buffer = EventStreamBuffer()
    n = 0
    for piece in pieces:
        buffer.add_data(piece)
        for _ in buffer:
            n += 1
    return n


def _timed(fn: Callable[[list[bytes]], int], pieces: list[bytes], frames: int) -> float:
    t0 = time.perf_counter()
    got = fn(pieces)
    elapsed = time.perf_counter() - t0
    if got != frames:
        raise RuntimeError(f"{fn.__name__} decoded {got} frames, expected {frames}")
    return elapsed


def measure_decoders(frames: int = 20_000, piece: int = 4096, rounds: int = 5) -> dict[str, Any]:
    """Best-of-`rounds` throughput of both decoders on the same bytes (alternating runs)."""
    data = kiro_stream(frames)
    pieces = _split(data, piece)
    if _ours(pieces) != _botocore(pieces):
        raise RuntimeError("our decoder and botocore's disagree on the benchmark stream")
    ours: list[float] = []
    boto: list[float] = []
    for _ in range(rounds):
        ours.append(_timed(_time_ours, pieces, frames))
        boto.append(_timed(_time_botocore, pieces, frames))
    best_ours, best_boto = min(ours), min(boto)
    return {
        "frames": frames,
        "bytes": len(data),
        "piece_bytes": piece,
        "rounds": rounds,
        "ours_s": best_ours,
        "botocore_s": best_boto,
        "ours_mb_s": len(data) / best_ours / 1e6,
        "botocore_mb_s": len(data) / best_boto / 1e6,
        "ours_frames_s": frames / best_ours,
        "botocore_frames_s": frames / best_boto,
        "ratio": best_boto / best_ours,
    }
