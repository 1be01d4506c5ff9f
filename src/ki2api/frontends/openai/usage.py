"""finish_reason and usage mapping shared by the non-streaming and the streaming encoders."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeAlias, assert_never

from ki2api.core.events import StopReason, Usage
from ki2api.core.pieces import Pieces
from ki2api.core.tokens import estimate_text_tokens

__all__ = ["FinishReason", "OutputTally", "finish_reason", "usage_object"]

FinishReason: TypeAlias = Literal["stop", "length", "tool_calls"]


def finish_reason(reason: StopReason, *, has_tool_calls: bool) -> FinishReason:
    """docs/api-compat.md §A.5. A response that made tool calls but ended "normally" reports
    `tool_calls`, since OpenAI clients run their tool loop on that value."""
    mapped: FinishReason
    match reason:
        case "end_turn" | "stop_sequence":
            mapped = "stop"
        case "max_tokens" | "context_window_exceeded":
            mapped = "length"
        case "tool_use":
            mapped = "tool_calls"
        case _:
            assert_never(reason)
    return "tool_calls" if has_tool_calls and mapped == "stop" else mapped


class OutputTally:
    """What the model produced, kept to estimate tokens when upstream reports no usage.

    Pieces are joined before estimating: estimating each stream fragment on its own would
    round every one of them up.
    """

    def __init__(self) -> None:
        self._output = Pieces()
        self._thinking = Pieces()
        # called on every streamed fragment: the lists' own appends, no method of ours between
        self.add_text: Callable[[str], None] = self._output.append
        self.add_thinking: Callable[[str], None] = self._thinking.append

    def compact(self) -> None:
        """A long answer's pieces joined (core/pieces.py): once per batch of a stream."""
        self._output.compact()
        self._thinking.compact()

    @property
    def reasoning_tokens(self) -> int:
        return estimate_text_tokens("".join(self._thinking))

    @property
    def output_tokens(self) -> int:
        return estimate_text_tokens("".join(self._output)) + self.reasoning_tokens


def usage_object(
    usage: Usage | None, tally: OutputTally, *, prompt_tokens_fallback: int
) -> dict[str, Any]:
    """The OpenAI `usage` object (docs/api-compat.md §A.4): prompt = input + cache read + cache
    creation."""
    if usage is None:
        prompt, completion, cached = prompt_tokens_fallback, tally.output_tokens, 0
    else:
        cached = usage.cache_read_input_tokens or 0
        prompt = usage.input_tokens + cached + (usage.cache_creation_input_tokens or 0)
        completion = usage.output_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": min(tally.reasoning_tokens, completion)},
    }
