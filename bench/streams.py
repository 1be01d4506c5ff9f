"""One chat request, to the emulator directly or through the gateway, timed.

Time to first token (TTFT) is measured from just before the request is written to the moment
the first piece of content is decoded: for the emulator, the first `assistantResponseEvent`
frame; for the gateway, the first SSE `data:` chunk with a non-empty `delta.content` (OpenAI)
or `text_delta` (Anthropic). A non-streaming answer has no TTFT. How each answer is checked:
`bench.consumers`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from bench.client import Connection, HttpClientError
from bench.consumers import AnthropicSseConsumer, JsonAnswerConsumer, OpenAISseConsumer
from ki2api.kiro.stream.codec import CodecError, EventStreamDecoder

__all__ = [
    "DirectConsumer",
    "StreamResult",
    "Target",
    "directive_text",
    "run_stream",
    "unique",
]

GATEWAY_MODEL = "claude-sonnet-4-20250514"
UPSTREAM_MODEL = "claude-sonnet-4"


def directive_text(directive: Mapping[str, Any]) -> str:
    """A user message carrying an emulator directive."""
    return "Benchmark request. <emu>" + orjson.dumps(dict(directive)).decode() + "</emu>"


class Consumer(Protocol):
    late_events: int  # content events only known at the end (a non-streaming answer: 1)

    def feed(self, piece: bytes) -> int:
        """Take a body piece; return how many content events it completed."""
        ...

    def finish(self) -> str | None:
        """End of body: None when the stream ended properly, else what went wrong."""
        ...


class DirectConsumer:
    """Reads the emulator's AWS event-stream with our decoder."""

    late_events = 0

    def __init__(self) -> None:
        self._decoder = EventStreamDecoder()
        self.error: str | None = None

    def feed(self, piece: bytes) -> int:
        content = 0
        for frame in self._decoder.feed(piece):
            if frame.message_type != "event":
                self.error = self.error or f"{frame.message_type} frame {frame.exception_type}"
            elif frame.event_type == "assistantResponseEvent":
                content += 1
        return content

    def finish(self) -> str | None:
        try:
            self._decoder.finish()
        except CodecError as exc:
            return self.error or f"decoder: {exc}"
        return self.error


@dataclass(frozen=True)
class Target:
    """Where the load goes: `direct` (the emulator) or `gateway` (Ki2API), and for the gateway
    which API (`openai`: /v1/chat/completions, `anthropic`: /v1/messages), streamed or not, and
    the client's `max_tokens` (None: not sent; the Anthropic API requires it)."""

    kind: str
    host: str
    port: int
    secret: str  # the emulator access token or the gateway API key
    profile_arn: str = ""
    api: str = "openai"
    stream: bool = True
    max_tokens: int | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Target:
        max_tokens = raw.get("max_tokens")
        return cls(
            kind=str(raw["kind"]),
            host=str(raw["host"]),
            port=int(raw["port"]),
            secret=str(raw["secret"]),
            profile_arn=str(raw.get("profile_arn", "")),
            api=str(raw.get("api", "openai")),
            stream=bool(raw.get("stream", True)),
            max_tokens=None if max_tokens is None else int(max_tokens),
        )

    def request(self, directive: Mapping[str, Any]) -> tuple[str, dict[str, str], bytes]:
        """(path, headers, body) of one chat request."""
        headers = {"Authorization": f"Bearer {self.secret}", "Content-Type": "application/json"}
        text = directive_text(directive)
        if self.kind == "direct":
            return "/generateAssistantResponse", headers, orjson.dumps(self._direct_body(text))
        body: dict[str, Any] = {
            "model": GATEWAY_MODEL,
            "stream": self.stream,
            "messages": [{"role": "user", "content": text}],
        }
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.stream:
            headers["Accept"] = "text/event-stream"
        if self.api == "anthropic":  # the way Anthropic's clients present the key
            del headers["Authorization"]
            headers["x-api-key"] = self.secret
            headers["anthropic-version"] = "2023-06-01"
            return "/v1/messages", headers, orjson.dumps(body)
        return "/v1/chat/completions", headers, orjson.dumps(body)

    def _direct_body(self, text: str) -> dict[str, Any]:
        return {
            "conversationState": {
                "chatTriggerType": "MANUAL",
                "conversationId": str(uuid.uuid4()),
                "currentMessage": {
                    "userInputMessage": {
                        "content": text,
                        "modelId": UPSTREAM_MODEL,
                        "origin": "AI_EDITOR",
                    }
                },
                "history": [],
            },
            "profileArn": self.profile_arn,
        }

    def consumer(self, directive: Mapping[str, Any]) -> Consumer:
        if self.kind == "direct":
            return DirectConsumer()
        if not self.stream:
            return JsonAnswerConsumer(self.api, str(directive.get("text", "")))
        return AnthropicSseConsumer() if self.api == "anthropic" else OpenAISseConsumer()


_STREAM_ERRORS = (
    HttpClientError,
    OSError,
    EOFError,  # asyncio.IncompleteReadError
    asyncio.LimitOverrunError,
    CodecError,
    ValueError,  # a chunk that is not JSON, a bad chunk size
)


@dataclass
class StreamResult:
    ok: bool
    ttft_ns: int | None
    total_ns: int
    content_events: int
    error: str | None = None


_SERIAL = itertools.count()


def unique(directive: Mapping[str, Any]) -> Mapping[str, Any]:
    """`directive` with its answer's text made unique (a serial number first): every request's
    message and every answer differ, as real ones do, so the gateway's token-count cache (which
    serves texts it has counted before) never answers for the bench."""
    text = directive.get("text")
    if not isinstance(text, str) or not text:
        return directive
    return {**directive, "text": f"{next(_SERIAL)} {text}"}


async def run_stream(
    conn: Connection,
    target: Target,
    directive: Mapping[str, Any],
    on_first: Callable[[], None] | None = None,
) -> StreamResult:
    """Send one request on `conn`, read the stream to its end, time the first content."""
    directive = unique(directive)
    path, headers, body = target.request(directive)
    consumer = target.consumer(directive)
    ttft: int | None = None
    events = 0
    t0 = time.perf_counter_ns()
    try:
        resp = await conn.request("POST", path, headers, body)
        if resp.status != 200:
            text = (await resp.read())[:300].decode("utf-8", "replace")
            return StreamResult(
                False, None, time.perf_counter_ns() - t0, 0, f"{resp.status} {text}"
            )
        async for piece in resp.pieces():
            n = consumer.feed(piece)
            if n and ttft is None:
                ttft = time.perf_counter_ns() - t0
                if on_first is not None:
                    on_first()
            events += n
    except _STREAM_ERRORS as exc:
        await conn.close()
        return StreamResult(False, ttft, time.perf_counter_ns() - t0, events, repr(exc)[:300])
    error = consumer.finish()
    events += consumer.late_events
    return StreamResult(error is None, ttft, time.perf_counter_ns() - t0, events, error)
