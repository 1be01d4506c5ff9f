"""Claude Code's web-search sub-request answered as Anthropic server-tool blocks
(docs/websearch.md). Pure.

Detection (`web_search_request_query`): Claude Code runs its WebSearch tool as a separate
Messages request whose only tool is the server tool ``{"type": "web_search_20250305", "name":
"web_search", …}`` and whose last user message is ``Perform a web search for the query: X``.
That request, and only that one, is answered by a search (Kiro's, `kiro/mcp.py`); anywhere else
a web-search server tool is dropped (`to_core.py`) and the model answers without searching.

The answer is made without a model turn: one `server_tool_use` block with the query, one
`web_search_tool_result` block with the results (or an error object) and one text block
summarising them (`core.search_results.summary_text`). `answer_blocks()` returns those three
blocks; they are the same for the streaming and the non-streaming reply
(`answer_block_events()` lists the content-block events of the streaming one, and
`web_search_message_events` wraps them in the message events, which `from_core.fold` folds into
the body), so the two cannot differ.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.messages import Conversation, Message, TextPart
from ki2api.core.search_results import WebSearchResult, summary_text
from ki2api.core.tokens import estimate_text_tokens
from ki2api.frontends.anthropic.blocks import DELTA_USAGE_KEYS, StreamEvent, usage_object

__all__ = [
    "QUERY_PREFIX",
    "SearchErrorCode",
    "WebSearchAnswer",
    "answer_block_events",
    "answer_blocks",
    "failed_answer",
    "is_web_search_tool",
    "new_server_tool_use_id",
    "search_error_code",
    "search_query",
    "server_tool_usage",
    "web_search_answer",
    "web_search_message_events",
    "web_search_request_query",
]

# The error codes a `web_search_tool_result_error` may carry (the Messages API's enum).
SearchErrorCode: TypeAlias = Literal[
    "invalid_tool_input",
    "unavailable",
    "max_uses_exceeded",
    "too_many_requests",
    "query_too_long",
    "request_too_large",
]
QUERY_PREFIX = "Perform a web search for the query: "
_TOOL_TYPE_PREFIX = "web_search_"
_ID_ALPHABET = string.ascii_letters + string.digits


# detection --------------------------------------------------------------------------------------
def is_web_search_tool(tool: object) -> bool:
    """An Anthropic web-search server tool (a mapping, or a wire model with a `type` attribute):
    ``type`` is ``web_search_`` + a date version (``web_search_20250305`` and later). A custom
    tool merely *named* web_search is not one."""
    kind = tool.get("type") if isinstance(tool, Mapping) else getattr(tool, "type", None)
    if not isinstance(kind, str) or not kind.startswith(_TOOL_TYPE_PREFIX):
        return False
    version = kind[len(_TOOL_TYPE_PREFIX) :]
    return version.isascii() and version.isdigit()


def search_query(conv: Conversation | Sequence[Message]) -> str | None:
    """The query of Claude Code's web-search sub-request, else None.

    Rule: the last message is from the user and one of its text parts starts (after leading
    white space) with exactly ``Perform a web search for the query: ``; the query is the rest
    of that part, stripped, and must not be empty.
    """
    messages = conv.messages if isinstance(conv, Conversation) else conv
    if not messages or messages[-1].role != "user":
        return None
    for part in messages[-1].parts:
        if isinstance(part, TextPart):
            text = part.text.lstrip()
            if text.startswith(QUERY_PREFIX):
                query = text[len(QUERY_PREFIX) :].strip()
                return query or None
    return None


def web_search_request_query(
    tools: Sequence[object], conv: Conversation | Sequence[Message]
) -> str | None:
    """The query when the whole request is a web search: at least one tool is offered, every
    offered tool is a web-search server tool, and `search_query` finds a query."""
    if not tools or not all(is_web_search_tool(t) for t in tools):
        return None
    return search_query(conv)


# the answer -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebSearchAnswer:
    """The whole reply to one web-search request. `error_code` set means the search failed."""

    tool_use_id: str
    query: str
    results: tuple[WebSearchResult, ...]
    text: str
    error_code: SearchErrorCode | None = None


def new_server_tool_use_id() -> str:
    """A fresh id in Anthropic's server-tool form: ``srvtoolu_01`` + 22 letters/digits."""
    return "srvtoolu_01" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))


def web_search_answer(
    query: str, results: tuple[WebSearchResult, ...] | list[WebSearchResult], *, tool_use_id: str
) -> WebSearchAnswer:
    hits = tuple(results)
    return WebSearchAnswer(tool_use_id, query, hits, summary_text(query, hits))


def failed_answer(query: str, code: SearchErrorCode, *, tool_use_id: str) -> WebSearchAnswer:
    text = f'The web search for "{query}" failed ({code}).'
    return WebSearchAnswer(tool_use_id, query, (), text, code)


def search_error_code(exc: GatewayError) -> SearchErrorCode | None:
    """How a failed search is reported inside a 200 answer, as Anthropic does; None for the
    failures that must stay HTTP errors (our or Kiro's auth, quota, suspension, bad request)."""
    match exc.kind:
        case ErrorKind.RATE_LIMITED:
            return "too_many_requests"
        case ErrorKind.CONTEXT_TOO_LONG:
            return "query_too_long"
        case (
            ErrorKind.UPSTREAM_ERROR
            | ErrorKind.UPSTREAM_PROTOCOL
            | ErrorKind.UPSTREAM_UNAVAILABLE
            | ErrorKind.UPSTREAM_TIMEOUT
            | ErrorKind.UPSTREAM_REJECTED
        ):
            return "unavailable"
        case _:
            return None


def server_tool_usage(searches: int = 1) -> dict[str, int]:
    """`usage.server_tool_use` of the reply (both keys are required by the anthropic SDK)."""
    return {"web_search_requests": searches, "web_fetch_requests": 0}


def _result_block(hit: WebSearchResult) -> dict[str, Any]:
    # `encrypted_content` is opaque to clients (Anthropic's holds an encrypted page excerpt
    # for citations); the snippet is what we have. The Messages API requires a string.
    return {
        "type": "web_search_result",
        "url": hit.url,
        "title": hit.title,
        "encrypted_content": hit.snippet or "",
        "page_age": hit.page_age,
    }


def answer_blocks(answer: WebSearchAnswer) -> list[dict[str, Any]]:
    """The reply's content: `server_tool_use`, `web_search_tool_result`, `text`."""
    content: Any
    if answer.error_code is not None:
        content = {"type": "web_search_tool_result_error", "error_code": answer.error_code}
    else:
        content = [_result_block(hit) for hit in answer.results]
    return [
        {
            "type": "server_tool_use",
            "id": answer.tool_use_id,
            "name": "web_search",
            "input": {"query": answer.query},
            "caller": {"type": "direct"},
        },
        {
            "type": "web_search_tool_result",
            "tool_use_id": answer.tool_use_id,
            "content": content,
            "caller": {"type": "direct"},
        },
        {"type": "text", "text": answer.text, "citations": None},
    ]


def answer_block_events(
    answer: WebSearchAnswer, *, first_index: int = 0
) -> list[tuple[str, dict[str, Any]]]:
    """The streaming reply's content-block events as (event name, data), indices counted from
    `first_index`; `message_start` before and `message_delta`/`message_stop` after are the
    caller's. Server-tool blocks arrive whole in their `content_block_start` (their input is
    complete), the text as one `text_delta`."""
    events: list[tuple[str, dict[str, Any]]] = []
    for index, block in enumerate(answer_blocks(answer), first_index):
        is_text = block["type"] == "text"
        start = {"type": "text", "text": "", "citations": None} if is_text else block
        events.append(_event("content_block_start", index=index, content_block=start))
        if is_text:
            delta = {"type": "text_delta", "text": block["text"]}
            events.append(_event("content_block_delta", index=index, delta=delta))
        events.append(_event("content_block_stop", index=index))
    return events


def _event(name: str, **fields: Any) -> tuple[str, dict[str, Any]]:
    return name, {"type": name, **fields}


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
