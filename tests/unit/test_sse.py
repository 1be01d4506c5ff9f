"""SSE framing: exact bytes, and the frames parse back with a minimal WHATWG-style reader."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ki2api.frontends.sse import sse_comment, sse_data, sse_done, sse_event


def _parse(stream: bytes) -> list[dict[str, str]]:
    """Split an SSE byte stream into events ({field: value}); comments are dropped."""
    events: list[dict[str, str]] = []
    for block in stream.decode("utf-8").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        if fields:
            events.append(fields)
    return events


@pytest.mark.parametrize(
    ("produced", "expected"),
    [
        (sse_data({"a": 1}), b'data: {"a":1}\n\n'),
        (sse_data({"t": "h\u00e9\n"}), b'data: {"t":"h\xc3\xa9\\n"}\n\n'),
        (sse_data([]), b"data: []\n\n"),
        (sse_done(), b"data: [DONE]\n\n"),
        (sse_comment(), b": keep-alive\n\n"),
        (sse_comment("ping"), b": ping\n\n"),
        (sse_comment("a\nb\r\nc"), b": a b c\n\n"),
        (sse_event("ping", {"type": "ping"}), b'event: ping\ndata: {"type":"ping"}\n\n'),
    ],
    ids=[
        "data",
        "data-utf8-newline",
        "data-list",
        "done",
        "comment",
        "comment-text",
        "comment-one-line",
        "event",
    ],
)
def test_exact_bytes(produced: bytes, expected: bytes) -> None:
    assert produced == expected


@pytest.mark.parametrize(
    "payload",
    [{"k": "v"}, {"text": "line1\nline2\r\n", "n": [1, 2.5, None, True]}, "plain", 0],
    ids=["object", "newlines-inside", "string", "zero"],
)
def test_data_round_trips_through_a_parser(payload: Any) -> None:
    stream = sse_comment() + sse_data(payload) + sse_event("x", payload) + sse_done()
    events = _parse(stream)
    assert [json.loads(e["data"]) for e in events[:2]] == [payload, payload]
    assert events[1]["event"] == "x"
    assert events[2] == {"data": "[DONE]"}


def test_event_name_with_line_break_is_refused() -> None:
    with pytest.raises(ValueError):
        sse_event("bad\nname", {})
