"""Server-sent events framing (the WHATWG `text/event-stream` format), shared by both frontends.

Each function returns one complete event, terminated by the blank line, as bytes ready to send.
JSON payloads are serialized with orjson (compact, UTF-8, no newlines), so a `data:` field is
always a single line.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["sse_comment", "sse_data", "sse_done", "sse_event"]

_DONE = b"data: [DONE]\n\n"
# the encoded `event:` line of each event name seen (a dialect has a dozen names)
_EVENT_HEADS: dict[str, bytes] = {}
_MAX_EVENT_HEADS = 64


def sse_data(obj: Any) -> bytes:
    """`data: <json>` followed by a blank line (the OpenAI streaming dialect: no `event:` line)."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def sse_done() -> bytes:
    """The OpenAI stream terminator."""
    return _DONE


def sse_comment(text: str = "keep-alive") -> bytes:
    """A comment line, ignored by SSE parsers: used as a keep-alive during upstream silence.

    Line breaks in `text` are replaced by spaces so the comment stays one line and can never
    be read as a field or as the end of an event.
    """
    one_line = text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
    return b": " + one_line.encode("utf-8") + b"\n\n"


def sse_event(name: str, obj: Any) -> bytes:
    """`event: <name>` + `data: <json>` (the Anthropic streaming dialect)."""
    head = _EVENT_HEADS.get(name)
    if head is None:
        if any(c in name for c in "\r\n"):
            raise ValueError("an SSE event name cannot contain a line break")
        head = b"event: " + name.encode("utf-8") + b"\ndata: "
        if len(_EVENT_HEADS) < _MAX_EVENT_HEADS:
            _EVENT_HEADS[name] = head
    return head + orjson.dumps(obj) + b"\n\n"
