"""Core stream events -> an OpenAI Responses API `response` object and its typed SSE events
(docs/api-compat.md §R.4-§R.6). Pure.

`ResponseBuilder` is the one fold of the events: the stream encoder (`ResponsesEncoder`) sends
the events it returns, the non-streaming path feeds it the whole answer and keeps only
`final`, so the two cannot differ. Output items come in the order the model produced them:
`reasoning` (thinking, its text as one summary part, its signature as `encrypted_content`),
`message` (one `output_text` part), `function_call` (one per tool call). A `max_tokens` stop
makes the response `incomplete` (`incomplete_details.reason: "max_output_tokens"`).

Each event has `type` and a `sequence_number` from 0, and goes out as `event: <type>` +
`data:`. A failure after the stream started is an `error` event then `response.failed` (the
items so far marked `incomplete`), and never a `response.completed`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from typing import Any, assert_never

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
from ki2api.frontends.openai.error_json import stream_error_body
from ki2api.frontends.openai.responses_search import SearchCalls, url_citations, web_search_item
from ki2api.frontends.openai.usage import OutputTally
from ki2api.frontends.sse import sse_event

__all__ = ["ResponseBuilder", "ResponsesEncoder", "new_item_id", "usage_block"]

SSEEvent = dict[str, Any]
# the codes a response's `error.code` may carry (the SDK's ResponseError is a closed enum)
_RATE_CODES = {ErrorKind.RATE_LIMITED, ErrorKind.QUOTA_EXHAUSTED}


def new_item_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def usage_block(usage: Usage | None, tally: OutputTally, input_fallback: int) -> dict[str, Any]:
    """The Responses `usage` object: input = input + cache read + cache creation."""
    if usage is None:
        cached = written = 0
        prompt, output = input_fallback, tally.output_tokens
    else:
        cached = usage.cache_read_input_tokens or 0
        written = usage.cache_creation_input_tokens or 0
        prompt, output = usage.input_tokens + cached + written, usage.output_tokens
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": min(tally.reasoning_tokens, output)},
        "total_tokens": prompt + output,
    }


class ResponseBuilder:
    """The fold of one answer's events into output items, and the SSE events on the way.

    `envelope` holds the response object's fixed fields (id, created_at, model and the request
    fields echoed back); `input_tokens` is the estimate used when Kiro reports no usage."""

    def __init__(
        self,
        envelope: dict[str, Any],
        *,
        input_tokens: int,
        searches: SearchCalls | None = None,
    ) -> None:
        self.envelope = envelope
        self.searches = searches  # tool calls of these ids are `web_search_call` items
        self._input_tokens = input_tokens
        self._seq = 0
        self._items: list[dict[str, Any]] = []
        self._open: int | None = None  # the output index of the open message or reasoning item
        self._text: dict[int, list[str]] = {}
        self._signature: dict[int, str] = {}
        self._tools: dict[int, int] = {}  # tool call index -> output index
        self._tools_open: set[int] = set()
        self._usage: Usage | None = None
        self._tally = OutputTally()
        self.final: dict[str, Any] | None = None

    # the events ---------------------------------------------------------------------------
    def _event(self, kind: str, **fields: Any) -> SSEEvent:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def snapshot(self, status: str, **fields: Any) -> dict[str, Any]:
        return {**self.envelope, "status": status, "output": [], **fields}  # usage: at the end

    def start(self) -> list[SSEEvent]:
        snap = self.snapshot("in_progress")
        return [
            self._event("response.created", response=snap),
            self._event("response.in_progress", response=snap),
        ]

    def feed(self, event: Event) -> list[SSEEvent]:
        match event:
            case TextDelta(text=text):
                self._tally.add_text(text)
                return self._text_delta(text) if text else []
            case ThinkingDelta(text=text, signature=signature):
                self._tally.add_thinking(text)
                return self._thinking_delta(text, signature)
            case ToolCallStart():
                return self._tool_start(event)
            case ToolArgsDelta(index=index, fragment=fragment):
                return self._tool_args(index, fragment)
            case ToolCallEnd(index=index):
                return self._tool_end(index) if index in self._tools_open else []
            case Usage():
                self._usage = event
                return []
            case MessageStop(reason=reason):
                return self._stop(reason)
            case _:
                assert_never(event)

    # message and reasoning items ----------------------------------------------------------
    def _open_item(self, kind: str) -> tuple[int, list[SSEEvent]]:
        if self._open is not None and self._items[self._open]["type"] == kind:
            return self._open, []
        out = self._close_open()
        k = len(self._items)
        item_id = new_item_id("msg" if kind == "message" else "rs")
        item: dict[str, Any]
        if kind == "message":
            item = {"id": item_id, "type": "message", "role": "assistant"}
            item.update(status="in_progress", content=[])
        else:
            item = {"id": item_id, "type": "reasoning", "summary": [], "status": "in_progress"}
        self._items.append(item)
        self._open, self._text[k] = k, []
        out.append(self._event("response.output_item.added", output_index=k, item=dict(item)))
        where = {"item_id": item_id, "output_index": k}
        if kind == "message":
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out.append(
                self._event("response.content_part.added", **where, content_index=0, part=part)
            )
        else:
            part = {"type": "summary_text", "text": ""}
            out.append(
                self._event(
                    "response.reasoning_summary_part.added", **where, summary_index=0, part=part
                )
            )
        return k, out

    def _text_delta(self, text: str) -> list[SSEEvent]:
        k, out = self._open_item("message")
        self._text[k].append(text)
        where = {"item_id": self._items[k]["id"], "output_index": k}
        out.append(self._event("response.output_text.delta", **where, content_index=0, delta=text))
        out[-1]["logprobs"] = []
        return out

    def _thinking_delta(self, text: str, signature: str | None) -> list[SSEEvent]:
        if not text and not signature:
            return []
        k, out = self._open_item("reasoning")
        if signature:
            self._signature[k] = signature
        if text:
            self._text[k].append(text)
            where = {"item_id": self._items[k]["id"], "output_index": k, "summary_index": 0}
            out.append(self._event("response.reasoning_summary_text.delta", **where, delta=text))
        return out

    def _close_open(self, status: str = "completed") -> list[SSEEvent]:
        k, self._open = self._open, None
        if k is None:
            return []
        item, text = self._items[k], "".join(self._text[k])
        where = {"item_id": item["id"], "output_index": k}
        if item["type"] == "message":
            notes = self._citations(text)
            part = {"type": "output_text", "text": text, "annotations": notes, "logprobs": []}
            item.update(status=status, content=[part])
            out = [
                self._event(
                    "response.output_text.annotation.added",
                    **where,
                    content_index=0,
                    annotation_index=i,
                    annotation=note,
                )
                for i, note in enumerate(notes)
            ]
            done = self._event("response.output_text.done", **where, content_index=0, text=text)
            done["logprobs"] = []
            out.append(done)
            out.append(
                self._event("response.content_part.done", **where, content_index=0, part=part)
            )
        else:
            summary = {"type": "summary_text", "text": text}
            item.update(status=status, summary=[summary])
            if k in self._signature:
                item["encrypted_content"] = self._signature[k]
            where["summary_index"] = 0
            out = [
                self._event("response.reasoning_summary_text.done", **where, text=text),
                self._event("response.reasoning_summary_part.done", **where, part=summary),
            ]
        out.append(self._event("response.output_item.done", output_index=k, item=dict(item)))
        return out

    # function calls -----------------------------------------------------------------------
    def _tool_start(self, event: ToolCallStart) -> list[SSEEvent]:
        if event.index in self._tools:
            raise GatewayError(
                ErrorKind.UPSTREAM_PROTOCOL, f"tool call {event.index} was started twice"
            )
        out = self._close_open()
        if self.searches is not None and event.id in self.searches.calls:
            return [*out, *self._search_start(event)]
        self._tally.add_text(event.name)
        k = self._tools[event.index] = len(self._items)
        self._tools_open.add(event.index)
        item = {"id": new_item_id("fc"), "type": "function_call", "call_id": event.id}
        item.update(name=event.name, arguments="", status="in_progress")
        self._items.append(item)
        self._text[k] = []
        out.append(self._event("response.output_item.added", output_index=k, item=dict(item)))
        return out

    def _tool_args(self, index: int, fragment: str) -> list[SSEEvent]:
        k = self._tools.get(index)
        if k is None or index not in self._tools_open:
            raise GatewayError(
                ErrorKind.UPSTREAM_PROTOCOL, f"arguments for tool call {index}, never started"
            )
        self._tally.add_text(fragment)
        if not fragment:
            return []
        self._text[k].append(fragment)
        item_id = self._items[k]["id"]
        return [
            self._event(
                "response.function_call_arguments.delta",
                item_id=item_id,
                output_index=k,
                delta=fragment,
            )
        ]

    def _tool_end(self, index: int, status: str = "completed") -> list[SSEEvent]:
        self._tools_open.discard(index)
        k = self._tools[index]
        item = self._items[k]
        if item["type"] == "web_search_call":
            return self._search_end(k, status)
        item.update(arguments="".join(self._text[k]), status=status)
        done = self._event(
            "response.function_call_arguments.done",
            item_id=item["id"],
            output_index=k,
            name=item["name"],
            arguments=item["arguments"],
        )
        return [done, self._event("response.output_item.done", output_index=k, item=dict(item))]

    # web searches (run by the gateway: the call's start and end frame the search) ------------
    def _citations(self, text: str) -> list[dict[str, Any]]:
        if self.searches is None or not self.searches.calls:
            return []
        return url_citations(text, self.searches.calls.values())

    def _search_start(self, event: ToolCallStart) -> list[SSEEvent]:
        assert self.searches is not None
        call = self.searches.calls[event.id]
        k = self._tools[event.index] = len(self._items)
        self._tools_open.add(event.index)
        item = web_search_item(event.id, call, status="in_progress", sources=False)
        self._items.append(item)
        where = {"item_id": event.id, "output_index": k}
        return [
            self._event("response.output_item.added", output_index=k, item=dict(item)),
            self._event("response.web_search_call.in_progress", **where),
            self._event("response.web_search_call.searching", **where),
        ]

    def _search_end(self, k: int, status: str) -> list[SSEEvent]:
        """The call's final state: the search's own (`completed` / `failed`), or `incomplete`
        when the response fails first."""
        assert self.searches is not None
        item_id = self._items[k]["id"]
        call = self.searches.calls[item_id]
        done = status
        if status == "completed":
            done = call.status if call.status in ("completed", "failed") else "incomplete"
        item = web_search_item(item_id, call, status=done, sources=self.searches.sources)
        self._items[k] = item
        out = []
        if done == "completed":
            where = {"item_id": item_id, "output_index": k}
            out.append(self._event("response.web_search_call.completed", **where))
        out.append(self._event("response.output_item.done", output_index=k, item=dict(item)))
        return out

    # the end ------------------------------------------------------------------------------
    def _close_all(self, status: str) -> list[SSEEvent]:
        out = self._close_open(status)
        for index in sorted(self._tools_open):
            out.extend(self._tool_end(index, status))
        return out

    def _stop(self, reason: StopReason) -> list[SSEEvent]:
        incomplete = reason in ("max_tokens", "context_window_exceeded")
        out = self._close_all("incomplete" if incomplete else "completed")
        usage = usage_block(self._usage, self._tally, self._input_tokens)
        details = {"reason": "max_output_tokens"} if incomplete else None
        status = "incomplete" if incomplete else "completed"
        final = self.snapshot(status, incomplete_details=details, usage=usage)
        final["output"] = [dict(item) for item in self._items]
        if not incomplete:
            final["completed_at"] = int(time.time())
        self.final = final
        out.append(self._event(f"response.{status}", response=final))
        return out

    def fail(self, err: GatewayError) -> list[SSEEvent]:
        """The events of a failure after the stream started: `error`, then `response.failed`."""
        body = stream_error_body(err)["error"]
        out = self._close_all("incomplete")
        code = "rate_limit_exceeded" if err.kind in _RATE_CODES else "server_error"
        failed = self.snapshot("failed", error={"code": code, "message": body["message"]})
        failed["output"] = [dict(item) for item in self._items]
        error = self._event("error", code=body["code"], message=body["message"])
        error["param"] = body["param"]
        return [*out, error, self._event("response.failed", response=failed)]


class ResponsesEncoder:
    """The SSE encoder of one streamed response (the pipeline's `StreamEncoder`)."""

    def __init__(self, builder: ResponseBuilder) -> None:
        self.builder = builder
        self._started = False
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    def feed(self, event: Event) -> bytes:
        if self._finished:
            return b""
        events: list[SSEEvent] = []
        if not self._started:
            self._started = True
            events.extend(self.builder.start())
        events.extend(self.builder.feed(event))
        if isinstance(event, MessageStop):
            self._finished = True
        return _encode(events)

    def feed_all(self, events: Iterable[Event]) -> bytes:
        """The bytes of a whole batch."""
        return b"".join([self.feed(event) for event in events])

    def error(self, err: GatewayError) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        events = [] if self._started else self.builder.start()
        self._started = True
        return _encode([*events, *self.builder.fail(err)])


def _encode(events: list[SSEEvent]) -> bytes:
    return b"".join(sse_event(e["type"], e) for e in events)
