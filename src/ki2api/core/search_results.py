"""Web search results, neutral of dialect. Pure.

Kiro's web-search endpoint (`kiro/mcp.py`) yields `WebSearchResult`s; `summary_text` writes them
as the text a model reads. How a dialect answers a search (Anthropic's server-tool blocks:
`frontends/anthropic/websearch.py`) is the frontend's business.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WebSearchResult", "summary_text"]

_SNIPPET_CHARS = 500


@dataclass(frozen=True, slots=True)
class WebSearchResult:
    """One hit. `page_age` is human-readable (e.g. ``"March 5, 2025"``) or None."""

    url: str
    title: str
    snippet: str | None = None
    page_age: str | None = None


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
