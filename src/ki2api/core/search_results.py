"""Web search answers: neutral result types and the reply a web-search request gets. Pure.

Kiro's web-search endpoint (`kiro/mcp.py`) yields `WebSearchResult`s. A client's server
tool call (Anthropic `web_search_20250305` and later) is answered without a model turn: one
`server_tool_use` block with the query, one `web_search_tool_result` block with the results
(or an error object) and one text block summarising them. `answer_blocks()` returns those three
blocks in the Messages API shapes; they are the same for the streaming and the non-streaming
reply (`answer_block_events()` lists the content-block events of the streaming one), so the two
cannot differ. Only the Anthropic dialect has server-tool blocks; the functions import nothing
of any frontend.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from ki2api.core.errors import ErrorKind, GatewayError

__all__ = [
    "SearchErrorCode",
    "WebSearchAnswer",
    "WebSearchResult",
    "answer_block_events",
    "answer_blocks",
    "failed_answer",
    "new_server_tool_use_id",
    "search_error_code",
    "server_tool_usage",
    "summary_text",
    "web_search_answer",
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
_SNIPPET_CHARS = 500
_ID_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class WebSearchResult:
    """One hit. `page_age` is human-readable (e.g. ``"March 5, 2025"``) or None."""

    url: str
    title: str
    snippet: str | None = None
    page_age: str | None = None


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


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET_CHARS else text[: _SNIPPET_CHARS - 1] + "…"


def summary_text(query: str, results: tuple[WebSearchResult, ...]) -> str:
    """The text block: every hit with its title, address, date and snippet, for the model
    that reads the tool result (Claude Code passes this text on; the result blocks it reduces
    to titles and links)."""
    if not results:
        return f'The web search for "{query}" found no results.'
    lines = [f'Web search results for "{query}":', ""]
    for number, hit in enumerate(results, 1):
        lines.append(f"{number}. {hit.title or hit.url}")
        lines.append(f"   URL: {hit.url}")
        if hit.page_age:
            lines.append(f"   Published: {hit.page_age}")
        if hit.snippet and hit.snippet.strip():
            lines.append(f"   {_clip(hit.snippet)}")
        lines.append("")
    return "\n".join(lines).rstrip()


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
