"""The Responses API's hosted `web_search` tool, run by the gateway on Kiro's search
(docs/api-compat.md §R.7, docs/websearch.md). Pure.

The model is offered a function (`search_function_name`: `web_search`, or another name when the
client has a function of that name) whose `query` the gateway searches with; each search is one
`web_search_call` output item (`SearchCall`: its query, its status, its sources). The loop that
runs the searches is the server's (`server/search_loop.py`); `ResponseBuilder` renders the calls
the loop announces as `web_search_call` items and their streaming events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ki2api.core.messages import ToolSpec

__all__ = [
    "SearchCall",
    "SearchCalls",
    "search_function_name",
    "search_query_of",
    "search_tool_spec",
    "sources_text",
    "url_citations",
    "web_search_item",
]

_NAMES = ("web_search", "kiro_web_search", "gateway_web_search")
_DESCRIPTION = (
    "Search the web for current information. Returns titles, URLs, dates and snippets of the "
    "top results. Use it when the answer needs facts that may be newer than your knowledge or "
    "that you are unsure of; cite the URLs you use."
)


def search_function_name(client_functions: Iterable[str]) -> str:
    """The internal search function's name: one no client function has."""
    taken = set(client_functions)
    for name in _NAMES:
        if name not in taken:
            return name
    n = 2
    while f"web_search_{n}" in taken:
        n += 1
    return f"web_search_{n}"


def search_tool_spec(name: str) -> ToolSpec:
    schema = {
        "type": "object",
        "properties": {"query": {"type": "string", "description": "The search query."}},
        "required": ["query"],
    }
    return ToolSpec(name=name, description=_DESCRIPTION, input_schema=schema)


def search_query_of(arguments: str) -> str | None:
    """The `query` of the model's call (None: not a JSON object with a non-empty string)."""
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return None
    query = value.get("query") if isinstance(value, dict) else None
    return query.strip() if isinstance(query, str) and query.strip() else None


@dataclass
class SearchCall:
    """One search: `status` is `in_progress` until the search has answered (`completed`) or
    failed (`failed`); `sources` are the result URLs; `text` is what the model reads."""

    query: str
    status: str = "in_progress"
    sources: tuple[str, ...] = ()
    text: str = ""
    titles: tuple[str, ...] = ()  # the sources' titles, in the same order


@dataclass
class SearchCalls:
    """The searches of one response, by item id (`ws_…`), shared by the loop that runs them and
    the builder that renders them; `name` is the internal function's name; `sources`: whether
    the items carry `action.sources` (`include: ["web_search_call.action.sources"]`)."""

    name: str
    sources: bool = False
    calls: dict[str, SearchCall] = field(default_factory=dict)


def web_search_item(
    item_id: str, call: SearchCall, *, status: str, sources: bool
) -> dict[str, Any]:
    action: dict[str, Any] = {"type": "search", "query": call.query}
    if sources and status != "in_progress":
        action["sources"] = [{"type": "url", "url": url} for url in call.sources]
    return {"id": item_id, "type": "web_search_call", "status": status, "action": action}


def sources_text(query: str, sources: Sequence[str]) -> str:
    """What the model reads for a search whose results were not kept (a client's own item)."""
    if not sources:
        return f'The results of the earlier web search for "{query}" are not available.'
    return "\n".join([f'Sources of the earlier web search for "{query}":', *sources])


_URL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/-_")


def url_citations(text: str, calls: Iterable[SearchCall]) -> list[dict[str, Any]]:
    """`url_citation` annotations for the result URLs `text` quotes (whole URLs only; at one
    place the longest wins), in text order."""
    found: list[tuple[int, int, str, str]] = []
    for call in calls:
        for url, title in zip(call.sources, call.titles, strict=False):
            start = text.find(url)
            while start >= 0:
                end = start + len(url)
                if end == len(text) or text[end] not in _URL_CHARS:
                    found.append((start, end, url, title or url))
                start = text.find(url, end)
    out: list[dict[str, Any]] = []
    last_end = 0
    for start, end, url, title in sorted(set(found), key=lambda f: (f[0], -f[1])):
        if start >= last_end:
            out.append(
                {"type": "url_citation", "start_index": start, "end_index": end}
                | {"url": url, "title": title}
            )
            last_end = end
    return out
