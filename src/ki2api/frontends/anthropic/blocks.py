"""Core events -> Anthropic stream events (docs/api-compat.md §B.5), as (name, payload) pairs.
Pure.

`BlockMachine` is the one place that decides the content blocks of a response: the SSE encoder
serialises its output and the non-streaming response folds the very same output (`fold`), so a
streamed message and a non-streamed one cannot differ.

Blocks are strictly sequential: a block is opened by the first event of a new kind and closed
(`content_block_stop`) before the next one opens, with indices 0, 1, 2, ... Text opens with
`{"type":"text","text":""}`; a tool call with `{"type":"tool_use",id,name,input:{}}` and a first
`input_json_delta` of `""`; thinking with `{"type":"thinking","thinking":"","signature":""}` and
always ends with one `signature_delta` (the upstream's signature, or `""` when Kiro gave none:
a gateway cannot mint a signature Anthropic would verify, and an empty one is sent back by
clients as it came and dropped by `to_core`). Empty deltas are never sent. After `MessageStop`:
`message_delta` (stop reason, stop sequence, final usage) and `message_stop`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeAlias

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.events import (
    Event,
    MessageStop,
    StopReason,
    TextDelta,
    ThinkingDelta,
    ToolArgsDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from ki2api.core.pieces import Pieces
from ki2api.core.tokens import estimate_text_tokens

__all__ = [
    "DELTA_USAGE_KEYS",
    "DIRECT_CALLER",
    "BlockKind",
    "BlockMachine",
    "StreamEvent",
    "stop_reason",
    "usage_object",
]

StreamEvent: TypeAlias = tuple[str, dict[str, Any]]
BlockKind: TypeAlias = Literal["text", "thinking", "tool_use"]

DELTA_USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "server_tool_use",
    "output_tokens_details",
)
# The spec's `caller` of a tool call: made directly by the model (no programmatic caller).
DIRECT_CALLER: dict[str, str] = {"type": "direct"}
_STOP_REASONS: dict[StopReason, str] = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "tool_use": "tool_use",
    "stop_sequence": "stop_sequence",
    "context_window_exceeded": "model_context_window_exceeded",
}


def stop_reason(reason: StopReason, *, has_tool_use: bool) -> str:
    """Anthropic's stop_reason; a response with tool calls that ended normally is `tool_use`."""
    if reason == "end_turn" and has_tool_use:
        return "tool_use"
    return _STOP_REASONS[reason]


class BlockMachine:
    """Feed core events, get Anthropic stream events. `start()` gives `message_start`."""

    def __init__(
        self,
        *,
        message_id: str,
        model: str,
        input_tokens: int,
        stop_sequence: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._message_id = message_id
        self._model = model
        self._input_estimate = input_tokens
        self._stop_sequence = stop_sequence
        self._next_index = 0
        self._open: BlockKind | None = None
        self._tool_key: int | None = None  # the core index of the open tool call
        self._signature = ""
        self._had_tool_use = False
        self._usage: Usage | None = None
        self._output = Pieces()  # for the output estimate (compacted once per batch)
        self.finished = False

    def start(self) -> StreamEvent:
        message: dict[str, Any] = {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "stop_details": None,
            "container": None,
            "usage": usage_object(self._input_estimate, 1, 0, 0),
        }
        return "message_start", {"type": "message_start", "message": message}

    def feed(self, event: Event) -> list[StreamEvent]:
        if self.finished:
            return []
        match event:
            case TextDelta(text=text):
                return self._delta("text", {"type": "text_delta", "text": text}, text)
            case ThinkingDelta(text=text, signature=sig):
                out = self._delta("thinking", {"type": "thinking_delta", "thinking": text}, text)
                if sig and self._open == "thinking":
                    self._signature = sig
                return out
            case ToolCallStart():
                return self._tool_start(event)
            case ToolArgsDelta(index=key, fragment=fragment):
                return self._tool_args(key, fragment)
            case ToolCallEnd(index=key):
                return self._close() if self._open == "tool_use" and self._tool_key == key else []
            case Usage():
                self._usage = event
                return []
            case MessageStop(reason=reason):
                return self._finish(reason)
        raise AssertionError(f"unhandled event {event!r}")  # pragma: no cover

    def continues(self, kind: BlockKind, text: str, key: int | None = None) -> int | None:
        """The index of the open block when non-empty `text` continues it (a block of `kind`;
        for a tool call, the call `key`): the text is taken as `feed` takes it, and its one
        `content_block_delta` is the caller's to send. None: `feed` the event instead."""
        if self._open != kind or not text or self._tool_key != key or self.finished:
            return None
        self._output.append(text)
        return self._next_index

    # -- blocks ---------------------------------------------------------------------------

    def _open_block(self, kind: BlockKind, block: dict[str, Any]) -> list[StreamEvent]:
        out = self._close()
        self._open = kind
        payload = {"type": "content_block_start", "index": self._next_index, "content_block": block}
        out.append(("content_block_start", payload))
        return out

    def _close(self) -> list[StreamEvent]:
        if self._open is None:
            return []
        out: list[StreamEvent] = []
        index = self._next_index
        if self._open == "thinking":
            delta = {"type": "signature_delta", "signature": self._signature}
            out.append(_delta_event(index, delta))
        out.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        self._open, self._tool_key, self._signature = None, None, ""
        self._next_index += 1
        return out

    def _delta(self, kind: BlockKind, delta: dict[str, Any], text: str) -> list[StreamEvent]:
        if not text:
            return []
        self._output.append(text)
        out: list[StreamEvent] = []
        if self._open != kind:
            empty: dict[str, Any] = {"type": "text", "text": "", "citations": None}
            if kind == "thinking":
                empty = {"type": "thinking", "thinking": "", "signature": ""}
            out = self._open_block(kind, empty)
        out.append(_delta_event(self._next_index, delta))
        return out

    def _tool_start(self, event: ToolCallStart) -> list[StreamEvent]:
        self._had_tool_use = True
        self._output.append(event.name)
        block = {
            "type": "tool_use",
            "id": event.id,
            "name": event.name,
            "input": {},
            "caller": DIRECT_CALLER,
        }
        out = self._open_block("tool_use", block)
        self._tool_key = event.index
        out.append(_delta_event(self._next_index, {"type": "input_json_delta", "partial_json": ""}))
        return out

    def _tool_args(self, key: int, fragment: str) -> list[StreamEvent]:
        if self._open != "tool_use" or self._tool_key != key:
            raise GatewayError(
                ErrorKind.UPSTREAM_PROTOCOL, f"arguments for tool call {key}, which is not open"
            )
        if not fragment:
            return []
        self._output.append(fragment)
        delta = {"type": "input_json_delta", "partial_json": fragment}
        return [_delta_event(self._next_index, delta)]

    # -- the end --------------------------------------------------------------------------

    def _finish(self, reason: StopReason) -> list[StreamEvent]:
        out = self._close()
        self.finished = True
        delta = {
            "stop_reason": stop_reason(reason, has_tool_use=self._had_tool_use),
            "stop_sequence": self._stop_sequence() if reason == "stop_sequence" else None,
            "stop_details": None,
            "container": None,
        }
        full = self.final_usage()
        usage = {k: full[k] for k in DELTA_USAGE_KEYS}
        out.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        out.append(("message_stop", {"type": "message_stop"}))
        return out

    def compact(self) -> None:
        """A long answer's output pieces joined (core/pieces.py)."""
        self._output.compact()

    def final_usage(self) -> dict[str, Any]:
        """The usage of the whole response; input never below our estimate unless Kiro
        reported the real count."""
        u = self._usage
        if u is None:
            output = estimate_text_tokens("".join(self._output))
            return usage_object(self._input_estimate, output, 0, 0)
        inp = u.input_tokens if not u.estimated else max(u.input_tokens, self._input_estimate)
        return usage_object(
            inp, u.output_tokens, u.cache_creation_input_tokens or 0, u.cache_read_input_tokens or 0
        )


def usage_object(
    input_tokens: int, output_tokens: int, cache_creation: int, cache_read: int
) -> dict[str, Any]:
    """Every usage key the spec marks required (docs/api-compat.md §B.4), nullable ones as null."""
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cache_creation,
        "cache_read_input_tokens": cache_read,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "server_tool_use": None,
        "service_tier": "standard",
        "inference_geo": None,
        "output_tokens_details": None,
    }


def _delta_event(index: int, delta: dict[str, Any]) -> StreamEvent:
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
