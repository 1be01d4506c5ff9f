"""Section `loop`: does one hostile request freeze the gateway for everyone? (issue 9)

One client streams an answer the emulator paces (a chunk every 20 ms) through the gateway,
first alone (the baseline) and then while hostile requests run at the same time: a 15 MB
`count_tokens`, a refused 8.4 MB message, a `response_format` pattern that backtracks
catastrophically in Python's `re`, ten 200 KB stop sequences and 32 stops of 1,000 characters
built to defeat a naive matcher. The figure is the streaming client's inter-chunk gap (max and
p99), beside the same stream alone in the same run. The hostile requests are sent from other
processes so that their client-side work does not disturb the measuring one. Takes ~5 s.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import httpx

from bench.stack import API_KEY, Stack

__all__ = ["HOSTILE", "loop_section"]

Json = dict[str, Any]
MODEL = "claude-sonnet-4-20250514"
CHUNKS = 100
DELAY_MS = 20
HOSTILE = ("count_tokens", "refused", "pattern", "ten_long_stops", "evil_stops")
_HEADERS = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}


def _emu(**directive: Any) -> str:
    return f"<emu>{json.dumps(directive)}</emu>"


def _body(name: str) -> tuple[str, Json]:
    user = [{"role": "user", "content": ""}]
    if name == "count_tokens":
        piece = "The quick brown fox jumps over the lazy dog, 狐狸. "  # 55 bytes
        user[0]["content"] = piece * (15_000_000 // 55)
        return "/v1/messages/count_tokens", {"model": MODEL, "messages": user}
    if name == "refused":
        user[0]["content"] = "y" * 8_400_000
        return "/v1/messages", {"model": MODEL, "max_tokens": 10, "messages": user}
    if name == "pattern":
        user[0]["content"] = _emu(text='"' + "a" * 27 + 'b"')
        schema = {"type": "string", "pattern": "^(a+)+$"}
        fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
        return "/v1/chat/completions", {"model": MODEL, "response_format": fmt, "messages": user}
    if name == "ten_long_stops":
        user[0]["content"] = _emu(text="z" * 5000, chunks=50)
        stops = [str(i) + "z" * 200_000 for i in range(10)]
        return "/v1/messages", {
            "model": MODEL,
            "max_tokens": 100,
            "stop_sequences": stops,
            "messages": user,
        }
    user[0]["content"] = _emu(text="a" * 5000, chunks=100)
    stops = [("a" * i) + "b" + "a" * (999 - i) for i in range(0, 960, 30)]
    return "/v1/messages", {
        "model": MODEL,
        "max_tokens": 4000,
        "stop_sequences": stops,
        "messages": user,
    }


def _send(url: str, name: str, start_at: float) -> tuple[str, int, float]:
    """In a child process: build one hostile request, send it at `start_at` (wall clock)."""
    path, body = _body(name)
    content = json.dumps(body, ensure_ascii=False).encode()
    time.sleep(max(0.0, start_at - time.time()))
    t0 = time.monotonic()
    with httpx.Client(timeout=120) as client:
        r = client.post(url + path, content=content, headers=_HEADERS)
    return name, r.status_code, time.monotonic() - t0


def _stream_gaps(url: str, started: threading.Event | None = None) -> list[float]:
    body = {
        "model": MODEL,
        "stream": True,
        "messages": [
            {"role": "user", "content": _emu(text="x" * CHUNKS, chunks=CHUNKS, delay_ms=DELAY_MS)}
        ],
    }
    times: list[float] = []
    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=_HEADERS) as r,
    ):
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                times.append(time.monotonic())
                if started is not None:
                    started.set()
    return [b - a for a, b in zip(times[1:], times[2:], strict=False)]


def _gap_stats(gaps: list[float]) -> Json:
    ordered = sorted(gaps)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"max_ms": ordered[-1] * 1000, "p99_ms": p99 * 1000, "gaps": len(ordered)}


def loop_section(stack: Stack) -> Json:
    url = stack.gateway_url
    _stream_gaps(url)  # warm-up (tokenizer, connections)
    alone = _gap_stats(_stream_gaps(url))
    with ProcessPoolExecutor(len(HOSTILE)) as pool:
        # children build their bodies (~1 s), then all send at the same instant, mid-stream
        start_at = time.time() + 1.5
        futures = [pool.submit(_send, url, name, start_at + 0.3) for name in HOSTILE]
        time.sleep(max(0.0, start_at - time.time()))
        gaps = _stream_gaps(url)
        answers = [f.result() for f in futures]
    hostile = _gap_stats(gaps)
    return {
        "chunks": CHUNKS,
        "delay_ms": DELAY_MS,
        "alone": alone,
        "with_hostile": hostile,
        "max_gap_difference_ms": hostile["max_ms"] - alone["max_ms"],
        "max_gap_ratio": hostile["max_ms"] / alone["max_ms"],
        "hostile": {name: {"status": status, "s": s} for name, status, s in answers},
    }
