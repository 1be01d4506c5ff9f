"""Claude Code's web-search sub-request answered as Anthropic blocks (docs/websearch.md).

The answer (a `server_tool_use`, its `web_search_tool_result`, and a short text) is built by
`core.websearch`; this module wraps it in the message events, so the stream and the
non-streaming body come from the same list (`from_core.fold`).
"""

from __future__ import annotations

from typing import Any

from ki2api.core.tokens import estimate_text_tokens
from ki2api.core.websearch import WebSearchAnswer, answer_block_events, server_tool_usage
from ki2api.frontends.anthropic.blocks import DELTA_USAGE_KEYS, StreamEvent, usage_object

__all__ = ["web_search_message_events"]


def web_search_message_events(
    answer: WebSearchAnswer, *, message_id: str, model: str, input_tokens: int
) -> list[StreamEvent]:
    usage = {
        **usage_object(input_tokens, estimate_text_tokens(answer.text), 0, 0),
        "server_tool_use": server_tool_usage(),
    }
    start: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "stop_details": None,
        "container": None,
        "usage": usage_object(input_tokens, 1, 0, 0),
    }
    delta = {
        "type": "message_delta",
        "delta": {
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "stop_details": None,
            "container": None,
        },
        "usage": {k: usage[k] for k in DELTA_USAGE_KEYS},
    }
    return [
        ("message_start", {"type": "message_start", "message": start}),
        *answer_block_events(answer),
        ("message_delta", delta),
        ("message_stop", {"type": "message_stop"}),
    ]
