"""Core events -> Anthropic responses: the SSE encoder and the non-streaming Message
(docs/api-compat.md §B.4, §B.5).

Both run `blocks.BlockMachine`; the non-streaming body is the fold of the same stream events a
client would have received (what the SDK's `MessageStream` accumulates), so `stream()`'s final
message equals the non-streaming result by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson
from pydantic_core import from_json

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.events import Event, TextDelta, ThinkingDelta, ToolArgsDelta
from ki2api.frontends.anthropic.blocks import BlockKind, BlockMachine, StreamEvent
from ki2api.frontends.anthropic.error_json import stream_error_body
from ki2api.frontends.sse import sse_event

__all__ = ["PING", "MessageEncoder", "fold", "message_response"]

PING = sse_event("ping", {"type": "ping"})
_dumps = orjson.dumps
# the bytes of a `content_block_delta` before its index, and between the index and the text
_DELTA_HEAD = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
_DELTA_MIDDLE: dict[BlockKind, bytes] = {
    "text": b',"delta":{"type":"text_delta","text":',
    "thinking": b',"delta":{"type":"thinking_delta","thinking":',
    "tool_use": b',"delta":{"type":"input_json_delta","partial_json":',
}


class MessageEncoder:
    """Sans-I/O encoder of one Messages stream: feed core events, send the bytes returned.

    The first `feed` also yields `message_start`. `error()` ends the stream with one
    `event: error` (and nothing after it); a stream that ends normally ends with `message_stop`.
    """

    def __init__(
        self,
        *,
        message_id: str,
        model: str,
        input_tokens: int,
        stop_sequence: Callable[[], str | None] = lambda: None,
        on_error: Callable[[GatewayError], GatewayError] = lambda e: e,
    ) -> None:
        self._machine = BlockMachine(
            message_id=message_id,
            model=model,
            input_tokens=input_tokens,
            stop_sequence=stop_sequence,
        )
        self._on_error = on_error
        self._started = False
        self._prefix: tuple[int, BlockKind, bytes] = (-1, "text", b"")  # of the last delta
        self._failed = False

    @property
    def finished(self) -> bool:
        return self._failed or self._machine.finished

    def feed(self, event: Event) -> bytes:
        if self._started and not self._failed:  # a delta continuing the open block: one step
            if isinstance(event, TextDelta):
                return self._delta(event, "text", event.text, None)
            if isinstance(event, ToolArgsDelta):
                return self._delta(event, "tool_use", event.fragment, event.index)
            if isinstance(event, ThinkingDelta) and event.signature is None:
                return self._delta(event, "thinking", event.text, None)
        return self._feed(event)

    def feed_all(self, events: Iterable[Event]) -> bytes:
        """`feed` each event in order: all their bytes, joined (a text delta continuing the open
        text block without a call: what `_delta` makes of it)."""
        parts: list[bytes] = []
        continues, started = self._machine.continues, self._started and not self._failed
        for event in events:
            if started and type(event) is TextDelta:
                index = continues("text", event.text)
                if index is not None:
                    parts += (self._delta_head(index, "text"), _dumps(event.text), b"}}\n\n")
                    continue
            parts.append(self.feed(event))
            started = self._started and not self._failed
        self._machine.compact()
        return b"".join(parts)

    def _delta(self, event: Event, block: BlockKind, text: str, key: int | None) -> bytes:
        """The one `content_block_delta` of a delta continuing the open block, as `_feed` would
        encode it (else `_feed`)."""
        index = self._machine.continues(block, text, key)
        if index is None:
            return self._feed(event)
        return self._delta_head(index, block) + _dumps(text) + b"}}\n\n"

    def _delta_head(self, index: int, block: BlockKind) -> bytes:
        """The bytes of a `content_block_delta` of block `index` before its text."""
        at, kind, prefix = self._prefix
        if at != index or kind != block:  # a new block: its bytes before the text, once
            prefix = b"%b%d%b" % (_DELTA_HEAD, index, _DELTA_MIDDLE[block])
            self._prefix = (index, block, prefix)
        return prefix

    def _feed(self, event: Event) -> bytes:
        if self.finished:
            return b""
        events = self._machine.feed(event)
        if not self._started:
            self._started = True
            events.insert(0, self._machine.start())
        return b"".join(sse_event(name, payload) for name, payload in events)

    def error(self, err: GatewayError) -> bytes:
        if self.finished:
            return b""
        self._failed = True
        return sse_event("error", stream_error_body(self._on_error(err)))


def message_response(
    events: Iterable[Event],
    *,
    message_id: str,
    model: str,
    input_tokens: int,
    stop_sequence: Callable[[], str | None] = lambda: None,
) -> dict[str, Any]:
    """The Message object of a whole (non-streaming) response."""
    machine = BlockMachine(
        message_id=message_id, model=model, input_tokens=input_tokens, stop_sequence=stop_sequence
    )
    stream = [machine.start()]
    for ev in _text_joined(events):
        stream.extend(machine.feed(ev))
    if not machine.finished:
        raise GatewayError(ErrorKind.UPSTREAM_PROTOCOL, "the Kiro response ended without a finish")
    return fold(stream)


def _text_joined(events: Iterable[Event]) -> Iterator[Event]:
    """`events` with each run of text deltas as one (a whole answer folds to the same Message;
    the stream's per-delta objects would only be folded back)."""
    run: list[str] = []
    for ev in events:
        if type(ev) is TextDelta:
            run.append(ev.text)
            continue
        if run:
            yield TextDelta("".join(run))
            run = []
        yield ev
    if run:
        yield TextDelta("".join(run))


def fold(stream: Iterable[StreamEvent]) -> dict[str, Any]:
    """The Message a client accumulates from these stream events."""
    message: dict[str, Any] = {}
    json_parts: dict[int, list[str]] = {}
    for name, payload in stream:
        if name == "message_start":
            message = {
                **payload["message"],
                "content": [],
                "usage": dict(payload["message"]["usage"]),
            }
        elif name == "content_block_start":
            message["content"].append(dict(payload["content_block"]))
        elif name == "content_block_delta":
            _apply_delta(
                message["content"][payload["index"]], payload["delta"], json_parts, payload["index"]
            )
        elif name == "message_delta":
            message.update(payload["delta"])
            message["usage"].update(payload["usage"])
    for index, parts in json_parts.items():
        text = "".join(parts)
        value = from_json(text, allow_partial=True) if text else {}
        message["content"][index]["input"] = value if isinstance(value, dict) else {}
    for block in message["content"]:
        if block["type"] == "text":
            block.setdefault("citations", None)
    return message


def _apply_delta(
    block: dict[str, Any], delta: dict[str, Any], json_parts: dict[int, list[str]], index: int
) -> None:
    kind = delta["type"]
    if kind == "text_delta":
        block["text"] += delta["text"]
    elif kind == "thinking_delta":
        block["thinking"] += delta["thinking"]
    elif kind == "signature_delta":
        block["signature"] = delta["signature"]
    elif kind == "input_json_delta":
        json_parts.setdefault(index, []).append(delta["partial_json"])
