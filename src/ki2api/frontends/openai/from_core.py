"""Core completions and stream events -> OpenAI Chat Completions responses
(docs/api-compat.md §A.4-§A.7).

`completion_response` renders a whole `Completion`; `ChunkEncoder` is the sans-I/O streaming
encoder: feed it core events, send the bytes it returns. Thinking text, which OpenAI has no field
for, goes out as `reasoning_content` (the DeepSeek / LiteLLM convention), only when present and
only with `include_reasoning=True` (the route passes it when the client set `reasoning_effort`);
otherwise it is dropped, never shown as content. Either way its tokens count in `usage`
(`completion_tokens_details.reasoning_tokens`): the model produced them.
`logprobs` is always null: Kiro gives none, and we never fabricate them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, assert_never

import orjson

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.events import (
    Completion,
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
from ki2api.frontends.openai.usage import OutputTally, finish_reason, usage_object
from ki2api.frontends.sse import sse_data, sse_done

_dumps = orjson.dumps

__all__ = ["ChunkEncoder", "completion_response"]


def _chunk_frame(envelope: dict[str, Any], include_usage: bool) -> tuple[bytes, bytes]:
    """The SSE bytes of a chunk before and after its delta's JSON (finish_reason null)."""
    marker = "\x00delta\x00"  # only keys and null follow it, so its last occurrence is it
    body: dict[str, Any] = {
        **envelope,
        "choices": [{"index": 0, "delta": marker, "finish_reason": None, "logprobs": None}],
    }
    if include_usage:
        body["usage"] = None
    head, _, tail = sse_data(body).rpartition(_dumps(marker))
    return head, tail


def completion_response(
    c: Completion,
    *,
    completion_id: str,
    created: int,
    model: str,
    prompt_tokens_fallback: int,
    include_reasoning: bool = False,
) -> dict[str, Any]:
    """The `chat.completion` object for one finished completion."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": c.text if c.text or not c.tool_calls else None,
        "refusal": None,
        "annotations": [],
    }
    if c.thinking and include_reasoning:
        message["reasoning_content"] = c.thinking
    if c.tool_calls:
        message["tool_calls"] = [
            {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}
            for t in c.tool_calls
        ]
    tally = OutputTally()
    tally.add_text(c.text)
    tally.add_thinking(c.thinking)
    for t in c.tool_calls:
        tally.add_text(t.name + t.arguments)
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": finish_reason(c.stop_reason, has_tool_calls=bool(c.tool_calls)),
    }
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage_object(c.usage, tally, prompt_tokens_fallback=prompt_tokens_fallback),
    }


class ChunkEncoder:
    """Sans-I/O encoder of one `chat.completion.chunk` stream (docs/api-compat.md §A.6).

    The first output carries the role chunk (`role` is sent exactly once); a tool call's `id`,
    `type` and `name` go only in its first fragment (the SDK concatenates repeated strings).
    `MessageStop` ends the stream: the finish chunk, the usage chunk when asked for, `[DONE]`.
    A failure after the stream started is `error()`: one error event, no finish, no `[DONE]`.
    """

    def __init__(
        self,
        *,
        completion_id: str,
        created: int,
        model: str,
        include_usage: bool,
        prompt_tokens_fallback: int,
        include_reasoning: bool = False,
    ) -> None:
        self._envelope: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        self._include_usage = include_usage
        # a content chunk is these bytes around the JSON text: what `_chunk` makes of it
        self._head, self._tail = _chunk_frame(self._envelope, include_usage)
        self._content_head, self._content_tail = self._head + b'{"content":', b"}" + self._tail
        self._include_reasoning = include_reasoning
        self._prompt_fallback = prompt_tokens_fallback
        self._started = False
        self._finished = False
        self._tool_index: dict[int, int] = {}
        self._usage: Usage | None = None
        self._tally = OutputTally()

    @property
    def finished(self) -> bool:
        """True once the stream was ended, normally (`MessageStop`) or by `error()`."""
        return self._finished

    def feed(self, event: Event) -> bytes:
        """SSE bytes for one event (possibly empty). Events after the end are ignored."""
        if self._started and not self._finished:  # the common events, as `_encode` does
            if isinstance(event, TextDelta):
                text = event.text
                self._tally.add_text(text)
                return self._content_head + _dumps(text) + self._content_tail if text else b""
            if isinstance(event, ToolArgsDelta):
                return self._tool_args(event.index, event.fragment)
        if self._finished:
            return b""
        out = b""
        if not self._started:
            self._started = True
            out = self._chunk({"role": "assistant", "content": ""})
        return out + self._encode(event)

    def feed_all(self, events: Iterable[Event]) -> bytes:
        """`feed` each event in order: all their bytes, joined (text chunks without a call)."""
        parts: list[bytes] = []
        head, tail, add_text = self._content_head, self._content_tail, self._tally.add_text
        for event in events:
            if type(event) is TextDelta and self._started and not self._finished:
                text = event.text
                add_text(text)
                if text:
                    parts += (head, _dumps(text), tail)
            else:
                parts.append(self.feed(event))
        self._tally.compact()
        return b"".join(parts)

    def error(self, err: GatewayError) -> bytes:
        """The in-stream error event for a failure after the stream started; ends the stream."""
        if self._finished:
            return b""
        self._finished = True
        return sse_data(stream_error_body(err))

    def _encode(self, event: Event) -> bytes:
        match event:
            case TextDelta(text=text):
                self._tally.add_text(text)
                return self._chunk({"content": text}) if text else b""
            case ThinkingDelta(text=text):
                self._tally.add_thinking(text)
                if not (text and self._include_reasoning):
                    return b""
                return self._chunk({"reasoning_content": text})
            case ToolCallStart():
                return self._tool_start(event)
            case ToolArgsDelta(index=index, fragment=fragment):
                return self._tool_args(index, fragment)
            case ToolCallEnd():
                return b""
            case Usage():
                self._usage = event
                return b""
            case MessageStop(reason=reason):
                return self._stop(reason)
            case _:
                assert_never(event)

    def _tool_start(self, event: ToolCallStart) -> bytes:
        if event.index in self._tool_index:
            raise GatewayError(
                ErrorKind.UPSTREAM_PROTOCOL, f"tool call {event.index} was started twice"
            )
        k = self._tool_index[event.index] = len(self._tool_index)
        self._tally.add_text(event.name)
        function = {"name": event.name, "arguments": ""}
        call = {"index": k, "id": event.id, "type": "function", "function": function}
        return self._chunk({"tool_calls": [call]})

    def _tool_args(self, index: int, fragment: str) -> bytes:
        k = self._tool_index.get(index)
        if k is None:
            raise GatewayError(
                ErrorKind.UPSTREAM_PROTOCOL, f"arguments for tool call {index}, never started"
            )
        self._tally.add_text(fragment)
        if not fragment:
            return b""
        # _chunk({"tool_calls": [{"index": k, "function": {"arguments": fragment}}]}), in bytes
        return b'%b{"tool_calls":[{"index":%d,"function":{"arguments":%b}}]}%b' % (
            self._head,
            k,
            _dumps(fragment),
            self._tail,
        )

    def _stop(self, reason: StopReason) -> bytes:
        self._finished = True
        finish = finish_reason(reason, has_tool_calls=bool(self._tool_index))
        out = self._chunk({}, finish)
        if self._include_usage:
            usage = usage_object(
                self._usage, self._tally, prompt_tokens_fallback=self._prompt_fallback
            )
            out += sse_data({**self._envelope, "choices": [], "usage": usage})
        return out + sse_done()

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        if finish is None:
            return self._head + _dumps(delta) + self._tail
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        body: dict[str, Any] = {**self._envelope, "choices": [choice]}
        if self._include_usage:
            body["usage"] = None
        return sse_data(body)
