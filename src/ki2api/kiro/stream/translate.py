"""Kiro event-stream frames -> core stream events. Sans-I/O: `feed(frame)` / `finish()`.

Each frame's events are returned by the `feed` call that receives it; only the few characters
that may be the beginning of a `<thinking>` / `</thinking>` tag (or of the blank line after
it) are held back until the next text arrives.

Mapping (docs/kiro-protocol.md §5.5-§5.9, §7):

* `assistantResponseEvent {content}` -> `TextDelta`. Empty content is skipped; identical
  consecutive chunks are NOT dropped (repeats are legitimate text). With `split_thinking`, a
  response whose text starts with `<thinking>` (leading whitespace allowed, tags may be split
  across frames) yields `ThinkingDelta` up to `</thinking>`, then one following "\\n\\n" is
  dropped. Tags later in the text are ordinary text.
* `reasoningContentEvent {text, signature}` -> `ThinkingDelta` (native thinking).
* `toolUseEvent {toolUseId, name, input?, stop?}` -> `ToolCallStart` on the first event of an
  id, `ToolArgsDelta` per input fragment (an object input is dumped as JSON), `ToolCallEnd` on
  `stop`. A `{"toolUseEvent": {...}}` wrapper is unwrapped; an unknown id with an empty name is
  ignored; a new call closes a still-open previous one (Kiro sends calls one after another).
  At the close (`stop`, the next call, or the end of the stream: a call without `stop` whose
  arguments are complete is accepted) the arguments must form one JSON object ("" becomes "{}"),
  else the stream fails with UPSTREAM_PROTOCOL and a message telling the client what happened
  and what to do: truncated arguments are never passed on as a successful call. Names are mapped
  back with `tool_names` (Kiro name -> client name; the request shortened them, see `tools`);
  unknown names pass through. Calls are indexed 0, 1, ... in order of their first event.
* With `single_tool_call` (the client sent `parallel_tool_calls: false`) only the first call
  goes out; later calls of the response are dropped whole (their arguments are not checked).
* `[Called NAME with args: {...}]` in the text, for a tool in `text_call_names`, becomes a tool
  call (`called_text.CalledTextFilter`); no names, no filtering.
* `meteringEvent` -> credits (summed), `contextUsageEvent` -> percentage, `metadataEvent
  .tokenUsage` -> authoritative usage. Other known types are checked for valid JSON and dropped;
  unknown types are ignored.
* `exception` / `error` frames -> `classify.classify_exception_frame`: a
  ContentLengthExceededException ends the stream normally with stop reason "max_tokens";
  anything else is raised.

A payload of a known event type that is not a JSON object, or whose key fields have the wrong
type, raises GatewayError(UPSTREAM_PROTOCOL): corrupt data is never downgraded to text.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orjson import JSONDecodeError
from orjson import loads as _loads

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
from ki2api.kiro.classify import classify_exception_frame
from ki2api.kiro.stream.called_text import CalledTextFilter, TextCall
from ki2api.kiro.stream.codec import Frame, HeaderBlock, RawFrame, frame_of
from ki2api.kiro.stream.payload import (
    load_payload,
    number,
    optional_field,
    protocol_error,
    rounded,
    tool_fragment,
)
from ki2api.kiro.stream.thinking_split import ThinkingSplitter

__all__ = ["TOOL_INPUT_CUT", "KiroStreamTranslator", "truncated_arguments_message"]

_HANDLED = frozenset(
    {
        "assistantResponseEvent",
        "reasoningContentEvent",
        "toolUseEvent",
        "meteringEvent",
        "contextUsageEvent",
        "metadataEvent",
    }
)
_IGNORED = frozenset(
    {
        "messageMetadataEvent",
        "followupPromptEvent",
        "codeReferenceEvent",
        "supplementaryWebLinksEvent",
    }
)
_CONTENT_TYPES = frozenset({TextDelta, ThinkingDelta, ToolCallStart, ToolArgsDelta})
_TEXT, _TOOL = "assistantResponseEvent", "toolUseEvent"


# The code of a tool call whose input Kiro cut off: the model's answer is too big to pass, so
# another account would fail the same way (kiro/accounts/policy.py blames the request).
TOOL_INPUT_CUT = "tool_input_truncated"


def _default_tool_id() -> str:
    return "tooluse_" + uuid.uuid4().hex[:22]


@dataclass(slots=True)
class _ToolCall:
    index: int  # -1 for a call dropped by `single_tool_call`
    id: str
    name: str  # as Kiro sent it
    client_name: str
    parts: list[str] = field(default_factory=list)
    closed: bool = False

    @property
    def dropped(self) -> bool:
        return self.index < 0


@dataclass(slots=True)
class _Metadata:
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read: int | None = None
    cache_write: int | None = None


class KiroStreamTranslator:
    """One upstream response: feed frames in order, then call `finish()` once."""

    def __init__(
        self,
        *,
        input_tokens: int,
        context_window: int = 200_000,
        split_thinking: bool = True,
        id_factory: Callable[[], str] | None = None,
        tool_names: Mapping[str, str] | None = None,
        text_call_names: Mapping[str, str] | None = None,
        single_tool_call: bool = False,
    ) -> None:
        self._input_estimate = input_tokens
        self._context_window = context_window
        self._new_id = id_factory or _default_tool_id
        self._splitter = ThinkingSplitter(enabled=split_thinking)
        self._called = CalledTextFilter(text_call_names or {})
        self._tool_names = dict(tool_names or {})
        self._single = single_tool_call
        self._emitted = 0
        self._calls: dict[str, _ToolCall] = {}
        self._open: _ToolCall | None = None
        self._output_text = Pieces()  # for the output estimate (compacted once per read)
        self._credits: float | None = None
        self._percent: float | None = None
        self._metadata: _Metadata | None = None
        self._max_tokens = False
        self._finished = False
        self._content_events = 0
        # text goes out as it comes (no thinking block to split off, no `[Called` to find)
        self._direct = not split_thinking and not self._called.active

    @property
    def content_events(self) -> int:
        """How many content-bearing events (text, thinking, tool call parts) were produced."""
        return self._content_events

    def feed(self, frame: Frame) -> list[Event]:
        """The events of one frame."""
        head = HeaderBlock(frame.headers, frame.header_types, frame.message_type, frame.event_type)
        out: list[Event] = []
        self.feed_raw([(head, frame.payload)], out)
        return out

    def feed_raw(self, frames: Iterable[RawFrame], out: list[Event]) -> None:
        """`feed` each of the decoder's raw frames (`EventStreamDecoder.feed_raw`) in order,
        appending the events to `out`: a `Frame` is built only for a frame that is not plain
        text. When a frame fails, the events of the frames before it are in `out`."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        for head, raw in frames:
            if head.message_type != "event":
                out += self._feed(frame_of((head, raw)))
            elif self._direct and head.event_type == _TEXT:  # `_on_text` without the filters
                try:
                    payload = _loads(raw)
                except JSONDecodeError:
                    payload = None
                if type(payload) is not dict or _TEXT in payload:  # let it fail, or unwrap it
                    payload = load_payload(_TEXT, raw)
                content = payload.get("content")
                if type(content) is not str:
                    content = optional_field(payload, "content", str, _TEXT)
                if content:
                    self._output_text.append(content)
                    self._content_events += 1
                    out.append(TextDelta(content))
            elif self._open is not None and head.event_type == _TOOL:
                self._direct_args(raw, out)
            else:
                out += self._feed(frame_of((head, raw)))
        self._output_text.compact()

    def _direct_args(self, raw: bytes, out: list[Event]) -> None:
        """A tool event while a call is open: a plain piece of that call's arguments in one
        step, anything else through `_on_tool`."""
        try:
            payload = _loads(raw)
        except JSONDecodeError:
            payload = None
        if type(payload) is not dict or _TOOL in payload:  # let it fail, or unwrap it
            payload = load_payload(_TOOL, raw)
        call, fragment, stop = self._open, payload.get("input"), payload.get("stop")
        name = payload.get("name")
        if (
            call is None
            or call.dropped
            or type(fragment) is not str
            or not fragment
            or payload.get("toolUseId") != call.id
            or not (stop is None or stop is False)
            or not (name is None or type(name) is str)
        ):
            out += self._count(self._on_tool(payload))
            return
        self._output_text.append(fragment)
        call.parts.append(fragment)
        self._content_events += 1
        out.append(ToolArgsDelta(call.index, fragment))

    def _feed(self, frame: Frame) -> list[Event]:
        if frame.message_type in ("exception", "error"):
            result = classify_exception_frame(frame)
            if isinstance(result, GatewayError):
                raise result
            self._max_tokens = True
            return []
        event_type = frame.event_type
        if frame.message_type != "event" or event_type is None:
            return []
        if event_type in _IGNORED:
            load_payload(event_type, frame.payload)
            return []
        if event_type not in _HANDLED:
            return []
        return self._count(self._dispatch(event_type, load_payload(event_type, frame.payload)))

    def finish(self) -> list[Event]:
        if self._finished:
            raise RuntimeError("finish() called twice")
        self._finished = True
        out = self._release_text()
        if self._open is not None and not self._open.dropped:
            # the stream ended before the tool call's stop frame: Kiro cut its input off (it
            # does so with large inputs); never pass on `{}` or half an input as a call
            call = self._open
            raise GatewayError(
                ErrorKind.UPSTREAM_PROTOCOL,
                truncated_arguments_message(call.client_name, len("".join(call.parts))),
                code=TOOL_INPUT_CUT,
            )
        out += self._close_open()
        out.append(self._usage())
        out.append(MessageStop(self._stop_reason()))
        return self._count(out)

    # -- dispatch -------------------------------------------------------------------------

    def _dispatch(self, event_type: str, payload: dict[str, Any]) -> list[Event]:
        match event_type:
            case "assistantResponseEvent":
                return self._on_text(payload)
            case "reasoningContentEvent":
                return self._on_reasoning(payload)
            case "toolUseEvent":
                return self._on_tool(payload)
            case "meteringEvent":
                usage = number(payload.get("usage"))
                if usage is not None:
                    self._credits = (self._credits or 0.0) + usage
            case "contextUsageEvent":
                percent = number(payload.get("contextUsagePercentage"))
                self._percent = self._percent if percent is None else percent
            case _:  # metadataEvent
                self._on_metadata(payload)
        return []

    def _count(self, events: list[Event]) -> list[Event]:
        self._content_events += sum(map(_CONTENT_TYPES.__contains__, map(type, events)))
        return events

    def _on_text(self, payload: dict[str, Any]) -> list[Event]:
        content = optional_field(payload, "content", str, "assistantResponseEvent")
        if not content:
            return []
        self._output_text.append(content)
        events = self._filter(self._splitter.feed(content))
        self._direct = self._splitter.passthrough and not self._called.active
        return events

    def _filter(self, events: list[Event]) -> list[Event]:
        """Text through the `[Called ...]` filter; other events as they are."""
        if not self._called.active:
            return events
        out: list[Event] = []
        for event in events:
            if isinstance(event, TextDelta):
                out += self._pieces(self._called.feed(event.text))
            else:
                out.append(event)
        return out

    def _pieces(self, pieces: list[str | TextCall]) -> list[Event]:
        out: list[Event] = []
        for piece in pieces:
            if isinstance(piece, str):
                out.append(TextDelta(piece))
                continue
            call = self._start_call(self._new_id(), piece.name, piece.name)
            if not call.dropped:
                out.append(ToolCallStart(call.index, call.id, call.client_name))
                out.append(ToolArgsDelta(call.index, piece.arguments))
                out.append(ToolCallEnd(call.index))
            call.closed = True
            self._open = None
        return out

    def _release_text(self) -> list[Event]:
        """Everything held back in the text (thinking tags, a `[Called` candidate)."""
        out = self._filter(self._splitter.flush())
        out += self._pieces(self._called.flush())
        self._direct = self._splitter.passthrough and not self._called.active
        return out

    def _on_reasoning(self, payload: dict[str, Any]) -> list[Event]:
        text = optional_field(payload, "text", str, "reasoningContentEvent") or ""
        signature = optional_field(payload, "signature", str, "reasoningContentEvent") or None
        if not text and signature is None:
            return []
        self._output_text.append(text)
        return [ThinkingDelta(text, signature)]

    def _on_metadata(self, payload: dict[str, Any]) -> None:
        usage = payload.get("tokenUsage")
        if not isinstance(usage, dict):
            return
        n = {k: number(v) for k, v in usage.items()}
        uncached, output, total = (
            n.get("uncachedInputTokens"),
            n.get("outputTokens"),
            n.get("totalTokens"),
        )
        if uncached is None and total is not None and output is not None:
            uncached = max(0.0, total - output)
        meta = _Metadata(
            input_tokens=rounded(uncached),
            output_tokens=rounded(output),
            cache_read=rounded(n.get("cacheReadInputTokens")),
            cache_write=rounded(n.get("cacheWriteInputTokens")),
        )
        self._metadata = meta
        percent = n.get("contextUsagePercentage")
        self._percent = self._percent if percent is None else percent

    # -- tool calls -----------------------------------------------------------------------

    def _on_tool(self, payload: dict[str, Any]) -> list[Event]:
        tool_id = optional_field(payload, "toolUseId", str, "toolUseEvent") or None
        name = optional_field(payload, "name", str, "toolUseEvent") or ""
        stop = optional_field(payload, "stop", bool, "toolUseEvent") is True
        fragment = tool_fragment(payload.get("input"))
        call = self._find_call(tool_id, name)
        out: list[Event] = []
        if call is None:
            if not name:
                return []
            out += self._release_text()
            out += self._close_open()
            call = self._start_call(tool_id or self._new_id(), name, self._client_name(name))
            if not call.dropped:
                out.append(ToolCallStart(call.index, call.id, call.client_name))
        elif call.closed:
            if fragment:
                raise protocol_error(
                    f"Kiro sent arguments for tool call {call.client_name!r} after its end"
                )
            return []
        if fragment:
            self._output_text.append(fragment)
            if not call.dropped:
                call.parts.append(fragment)
                out.append(ToolArgsDelta(call.index, fragment))
        if stop:
            out += self._close(call)
        return out

    def _find_call(self, tool_id: str | None, name: str) -> _ToolCall | None:
        if tool_id is not None:
            return self._calls.get(tool_id)
        if self._open is not None and (not name or name == self._open.name):
            return self._open
        return None

    def _client_name(self, name: str) -> str:
        return self._tool_names.get(name, name)

    def _start_call(self, tool_id: str, name: str, client_name: str) -> _ToolCall:
        index = -1 if self._single and self._emitted else self._emitted
        self._emitted += index >= 0
        call = _ToolCall(index=index, id=tool_id, name=name, client_name=client_name)
        self._calls[tool_id] = call
        self._open = call
        return call

    def _close_open(self) -> list[Event]:
        return self._close(self._open) if self._open is not None else []

    def _close(self, call: _ToolCall) -> list[Event]:
        out: list[Event] = []
        if call.dropped:
            call.closed = True
            self._open = None
            return out
        if not call.parts:
            call.parts.append("{}")
            out.append(ToolArgsDelta(call.index, "{}"))
        received = "".join(call.parts)
        try:
            args = json.loads(received)
        except ValueError:
            args = None
        if not isinstance(args, dict):
            raise GatewayError(
                ErrorKind.UPSTREAM_PROTOCOL,
                truncated_arguments_message(call.client_name, len(received)),
                code=TOOL_INPUT_CUT,
            )
        call.closed = True
        if self._open is call:
            self._open = None
        out.append(ToolCallEnd(call.index))
        return out

    # -- the end --------------------------------------------------------------------------

    def _usage(self) -> Usage:
        meta = self._metadata or _Metadata()
        input_tokens = meta.input_tokens
        if input_tokens is None and self._percent is not None and self._percent > 0:
            input_tokens = round(self._percent * self._context_window / 100)
        output_tokens = meta.output_tokens
        if output_tokens is None:
            output_tokens = estimate_text_tokens("".join(self._output_text))
        return Usage(
            input_tokens=self._input_estimate if input_tokens is None else input_tokens,
            output_tokens=output_tokens,
            cache_read_input_tokens=meta.cache_read,
            cache_creation_input_tokens=meta.cache_write,
            estimated=meta.input_tokens is None or meta.output_tokens is None,
            credits=self._credits,
            context_usage_percent=self._percent,
        )

    def _stop_reason(self) -> StopReason:
        if self._percent is not None and self._percent >= 100:
            return "context_window_exceeded"
        if self._max_tokens:
            return "max_tokens"
        return "tool_use" if self._emitted else "end_turn"


def truncated_arguments_message(name: str, received_chars: int) -> str:
    """What the client is told when a tool call's arguments are not a complete JSON object."""
    return (
        f"The upstream (Kiro) cut off the arguments of the tool call {name!r}: the"
        f" {received_chars} characters received are not a complete JSON object, so the call"
        " was not passed on. Kiro truncates very large tool inputs; ask the model to write large"
        " content in smaller pieces (for example several smaller edits or appends) and retry."
    )
