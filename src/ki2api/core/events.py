"""Stream events: the tagged union every backend yields and every frontend encodes.

A stream is: zero or more content events, optionally `Usage`, then exactly one `MessageStop`.
Failures are not events: the backend raises `GatewayError` from the iterator instead.
Non-streaming requests run the same events through `aggregate()`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, TypeAlias, assert_never

__all__ = [
    "Completion",
    "CompletionToolCall",
    "Event",
    "MessageStop",
    "StopReason",
    "TextDelta",
    "ThinkingDelta",
    "ToolArgsDelta",
    "ToolCallEnd",
    "ToolCallStart",
    "Usage",
    "aggregate",
]

StopReason: TypeAlias = Literal[
    "end_turn", "max_tokens", "tool_use", "stop_sequence", "context_window_exceeded"
]


# The events made once per streamed fragment (text, thinking, tool arguments) set their slots
# through the slot descriptors in their own `__init__`: a frozen dataclass's generated one goes
# through `object.__setattr__` per field, which costs a third more on the hot path.


@dataclass(frozen=True, slots=True, init=False)
class TextDelta:
    text: str

    def __init__(self, text: str) -> None:
        _SET_TEXT(self, text)


@dataclass(frozen=True, slots=True, init=False)
class ThinkingDelta:
    text: str
    signature: str | None = None

    def __init__(self, text: str, signature: str | None = None) -> None:
        _SET_THINKING(self, text)
        _SET_SIGNATURE(self, signature)


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    """A tool call begins. `index` counts tool calls 0, 1, ... within the response."""

    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True, init=False)
class ToolArgsDelta:
    """A piece of the tool call's JSON arguments; the pieces concatenate to one JSON object."""

    index: int
    fragment: str

    def __init__(self, index: int, fragment: str) -> None:
        _SET_INDEX(self, index)
        _SET_FRAGMENT(self, fragment)


_SET_TEXT = TextDelta.__dict__["text"].__set__
_SET_THINKING = ThinkingDelta.__dict__["text"].__set__
_SET_SIGNATURE = ThinkingDelta.__dict__["signature"].__set__
_SET_INDEX = ToolArgsDelta.__dict__["index"].__set__
_SET_FRAGMENT = ToolArgsDelta.__dict__["fragment"].__set__


@dataclass(frozen=True, slots=True)
class ToolCallEnd:
    index: int


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage. `estimated` is True when computed locally rather than reported upstream."""

    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    estimated: bool = True
    credits: float | None = None
    context_usage_percent: float | None = None


@dataclass(frozen=True, slots=True)
class MessageStop:
    reason: StopReason


Event: TypeAlias = (
    TextDelta | ThinkingDelta | ToolCallStart | ToolArgsDelta | ToolCallEnd | Usage | MessageStop
)


@dataclass(frozen=True, slots=True)
class CompletionToolCall:
    id: str
    name: str
    arguments: str  # the JSON text, exactly as streamed


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    thinking: str
    thinking_signature: str | None
    tool_calls: tuple[CompletionToolCall, ...]
    stop_reason: StopReason
    usage: Usage | None


def aggregate(events: Iterable[Event]) -> Completion:
    """Fold a whole stream into one completion (the non-streaming path)."""
    text: list[str] = []
    thinking: list[str] = []
    signature: str | None = None
    calls: dict[int, tuple[str, str, list[str]]] = {}
    usage: Usage | None = None
    stop: StopReason = "end_turn"
    for ev in events:
        match ev:
            case TextDelta(text=t):
                text.append(t)
            case ThinkingDelta(text=t, signature=sig):
                thinking.append(t)
                signature = sig or signature
            case ToolCallStart(index=i, id=cid, name=name):
                calls[i] = (cid, name, [])
            case ToolArgsDelta(index=i, fragment=frag):
                calls[i][2].append(frag)
            case ToolCallEnd():
                pass
            case Usage():
                usage = ev
            case MessageStop(reason=r):
                stop = r
            case _:
                assert_never(ev)
    tool_calls = tuple(
        CompletionToolCall(id=cid, name=name, arguments="".join(parts))
        for _, (cid, name, parts) in sorted(calls.items())
    )
    return Completion(
        text="".join(text),
        thinking="".join(thinking),
        thinking_signature=signature,
        tool_calls=tool_calls,
        stop_reason=stop,
        usage=usage,
    )
