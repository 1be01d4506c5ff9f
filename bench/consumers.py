"""What the load generator makes of a gateway's answer: each kind is checked properly, so an
error can never pass as a fast answer.

- OpenAI stream: SSE `data:` chunks, must end with `[DONE]`; a content event = a chunk with a
  non-empty `delta.content`.
- Anthropic stream: must end with `message_stop`; a content event = a `content_block_delta`
  with a `text_delta`.
- Non-streaming (OpenAI or Anthropic): one JSON body whose text holds all of the text the
  emulator was told to send (compared word by word); it counts as one content event.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["AnthropicSseConsumer", "JsonAnswerConsumer", "OpenAISseConsumer"]


def _events(buf: bytes, piece: bytes) -> tuple[list[bytes], bytes]:
    """Complete SSE events (blank-line separated) and what is left in the buffer."""
    *events, rest = (buf + piece).replace(b"\r\n", b"\n").split(b"\n\n")
    return events, rest


def _data_lines(event: bytes) -> list[bytes]:
    return [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]


class OpenAISseConsumer:
    """The OpenAI SSE stream; good when it ends with [DONE] and carried no error chunk."""

    late_events = 0

    def __init__(self) -> None:
        self._buf = b""
        self.done = False
        self.error: str | None = None

    def feed(self, piece: bytes) -> int:
        events, self._buf = _events(self._buf, piece)
        return sum(self._data(data) for event in events for data in _data_lines(event))

    def _data(self, data: bytes) -> int:
        if data == b"[DONE]":
            self.done = True
            return 0
        chunk = orjson.loads(data)
        if "error" in chunk:
            self.error = self.error or f"error chunk: {str(chunk['error'])[:200]}"
            return 0
        choices = chunk.get("choices") or []
        return sum(1 for c in choices if (c.get("delta") or {}).get("content"))

    def finish(self) -> str | None:
        if self.error is None and not self.done:
            return "stream ended without [DONE]"
        return self.error


class AnthropicSseConsumer:
    """The Anthropic Messages stream; good when it ends with message_stop and had no error."""

    late_events = 0

    def __init__(self) -> None:
        self._buf = b""
        self.stopped = False
        self.error: str | None = None

    def feed(self, piece: bytes) -> int:
        events, self._buf = _events(self._buf, piece)
        return sum(self._data(data) for event in events for data in _data_lines(event))

    def _data(self, data: bytes) -> int:
        event = orjson.loads(data)
        kind = event.get("type")
        if kind == "error":
            self.error = self.error or f"error event: {str(event.get('error'))[:200]}"
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            return 1 if delta.get("type") == "text_delta" and delta.get("text") else 0
        return 0

    def finish(self) -> str | None:
        if self.error is None and not self.stopped:
            return "stream ended without message_stop"
        return self.error


def _openai_text(body: dict[str, Any]) -> str | None:
    choices = body.get("choices") or []
    if body.get("object") != "chat.completion" or not choices:
        return None
    content = (choices[0].get("message") or {}).get("content")
    return content if isinstance(content, str) else None


def _anthropic_text(body: dict[str, Any]) -> str | None:
    if body.get("type") != "message":
        return None
    blocks = body.get("content") or []
    return "".join(b.get("text", "") for b in blocks if b.get("type") == "text")


class JsonAnswerConsumer:
    """A non-streaming answer (`api`: openai or anthropic): complete when its text holds every
    word the emulator was told to send."""

    def __init__(self, api: str, expected_text: str) -> None:
        self._text_of = _openai_text if api == "openai" else _anthropic_text
        self._expected = expected_text.split()
        self._pieces: list[bytes] = []
        self.late_events = 0

    def feed(self, piece: bytes) -> int:
        self._pieces.append(piece)
        return 0

    def finish(self) -> str | None:
        raw = b"".join(self._pieces)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return f"not JSON: {raw[:200]!r}"
        text = self._text_of(body) if isinstance(body, dict) else None
        if text is None:
            return f"not a chat answer: {raw[:200]!r}"
        if text.split() != self._expected:
            return f"incomplete text: {len(text.split())} of {len(self._expected)} words"
        self.late_events = 1
        return None
