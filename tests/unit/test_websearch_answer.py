"""core/search_results.py (the summary text) and frontends/anthropic/websearch.py (the answer
blocks and their streaming events), checked against the official anthropic SDK (strict
validation; its own stream accumulator), served by an httpx2 mock transport (the HTTP library
that SDK uses)."""

from __future__ import annotations

import re
from typing import Any

import anthropic
import httpx2
import orjson
import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.search_results import WebSearchResult, summary_text
from ki2api.frontends.anthropic.websearch import (
    SearchErrorCode,
    WebSearchAnswer,
    answer_block_events,
    answer_blocks,
    failed_answer,
    new_server_tool_use_id,
    search_error_code,
    server_tool_usage,
    web_search_answer,
)
from ki2api.frontends.sse import sse_event

HITS = (
    WebSearchResult("https://a.example/1", "Alpha", "First   snippet\nhere.", "March 5, 2025"),
    WebSearchResult("https://b.example/2", "", None, None),
    WebSearchResult("https://c.example/3", "Gamma", "x" * 600, None),
)


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ((), 'The web search for "q" found no results.'),
        (
            HITS[:2],
            'Web search results for "q":\n\n'
            "1. Alpha\n   URL: https://a.example/1\n   Published: March 5, 2025\n"
            "   First snippet here.\n\n"
            "2. https://b.example/2\n   URL: https://b.example/2",
        ),
        (
            HITS[2:],
            'Web search results for "q":\n\n1. Gamma\n   URL: https://c.example/3\n   '
            + "x" * 499
            + "…",
        ),
    ],
    ids=["none", "title-date-snippet-and-bare-url", "long-snippet-clipped"],
)
def test_summary_text(results: tuple[WebSearchResult, ...], expected: str) -> None:
    assert summary_text("q", results) == expected


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        (ErrorKind.RATE_LIMITED, "too_many_requests"),
        (ErrorKind.CONTEXT_TOO_LONG, "query_too_long"),
        (ErrorKind.UPSTREAM_ERROR, "unavailable"),
        (ErrorKind.UPSTREAM_PROTOCOL, "unavailable"),
        (ErrorKind.UPSTREAM_UNAVAILABLE, "unavailable"),
        (ErrorKind.UPSTREAM_TIMEOUT, "unavailable"),
        (ErrorKind.UPSTREAM_REJECTED, "unavailable"),
        (ErrorKind.UPSTREAM_AUTH, None),
        (ErrorKind.QUOTA_EXHAUSTED, None),
        (ErrorKind.PERMISSION, None),
        (ErrorKind.NO_CREDENTIALS, None),
        (ErrorKind.CANCELLED, None),
        (ErrorKind.INTERNAL, None),
    ],
    ids=lambda v: str(v),
)
def test_search_error_code(kind: ErrorKind, code: str | None) -> None:
    assert search_error_code(GatewayError(kind, "x")) == code


def test_new_server_tool_use_id() -> None:
    ids = {new_server_tool_use_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"srvtoolu_01[A-Za-z0-9]{22}", i) for i in ids)


OK = web_search_answer("kiro news", list(HITS), tool_use_id="srvtoolu_01abc")
FAILED = failed_answer("kiro news", "unavailable", tool_use_id="srvtoolu_01abc")
EMPTY = web_search_answer("kiro news", [], tool_use_id="srvtoolu_01abc")


def test_answer_blocks_shapes() -> None:
    server, result, text = answer_blocks(OK)
    assert server == {
        "type": "server_tool_use",
        "id": "srvtoolu_01abc",
        "name": "web_search",
        "input": {"query": "kiro news"},
        "caller": {"type": "direct"},
    }
    assert result["tool_use_id"] == "srvtoolu_01abc"
    assert result["content"][0] == {
        "type": "web_search_result",
        "url": "https://a.example/1",
        "title": "Alpha",
        "encrypted_content": "First   snippet\nhere.",
        "page_age": "March 5, 2025",
    }
    assert result["content"][1]["encrypted_content"] == ""
    assert text == {"type": "text", "text": OK.text, "citations": None}
    assert answer_blocks(FAILED)[1]["content"] == {
        "type": "web_search_tool_result_error",
        "error_code": "unavailable",
    }
    assert FAILED.text == 'The web search for "kiro news" failed (unavailable).'


def test_block_events_are_ordered_and_indexed() -> None:
    events = answer_block_events(OK, first_index=2)
    names = [name for name, _ in events]
    assert names == [
        "content_block_start",
        "content_block_stop",
        "content_block_start",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
    ]
    assert [data["index"] for _, data in events] == [2, 2, 3, 3, 4, 4, 4]
    assert all(data["type"] == name for name, data in events)


def _message(content: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": content,
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 5,
            "server_tool_use": server_tool_usage(),
        },
    }


def _sse(answer: WebSearchAnswer) -> bytes:
    start = _message([])
    start["stop_reason"] = None
    out = [sse_event("message_start", {"type": "message_start", "message": start})]
    out += [sse_event(name, data) for name, data in answer_block_events(answer)]
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 5, "server_tool_use": server_tool_usage()},
    }
    out += [sse_event("message_delta", delta), sse_event("message_stop", {"type": "message_stop"})]
    return b"".join(out)


def _client(answer: WebSearchAnswer) -> anthropic.Anthropic:
    def handle(request: httpx2.Request) -> httpx2.Response:
        if orjson.loads(request.content).get("stream"):
            headers = {"content-type": "text/event-stream"}
            return httpx2.Response(200, content=_sse(answer), headers=headers)
        return httpx2.Response(200, json=_message(answer_blocks(answer)))

    http = httpx2.Client(transport=httpx2.MockTransport(handle))
    return anthropic.Anthropic(
        api_key="k", base_url="http://test", http_client=http, _strict_response_validation=True
    )


ASK = [{"role": "user", "content": "Perform a web search for the query: kiro news"}]
TOOLS: Any = [{"type": "web_search_20250305", "name": "web_search"}]


@pytest.mark.parametrize("answer", [OK, EMPTY, FAILED], ids=["results", "empty", "error"])
def test_sdk_reads_the_same_message_streamed_and_not(answer: WebSearchAnswer) -> None:
    with _client(answer) as client:
        plain = client.messages.create(model="m", max_tokens=100, messages=ASK, tools=TOOLS)
        with client.messages.stream(model="m", max_tokens=100, messages=ASK, tools=TOOLS) as stream:
            streamed = stream.get_final_message()
    assert streamed.model_dump() == plain.model_dump()
    kinds = [block.type for block in plain.content]
    assert kinds == ["server_tool_use", "web_search_tool_result", "text"]
    server, result = plain.content[0], plain.content[1]
    assert server.type == "server_tool_use" and server.input == {"query": "kiro news"}
    assert result.type == "web_search_tool_result" and result.tool_use_id == server.id


def test_sdk_types_the_results() -> None:
    with _client(OK) as client:
        msg = client.messages.create(model="m", max_tokens=1, messages=ASK, tools=TOOLS)
    result = msg.content[1]
    assert result.type == "web_search_tool_result"
    assert isinstance(result.content, list)
    assert [(r.url, r.title, r.page_age) for r in result.content] == [
        (h.url, h.title, h.page_age) for h in HITS
    ]


@pytest.mark.parametrize(
    "code",
    [
        "invalid_tool_input",
        "unavailable",
        "max_uses_exceeded",
        "too_many_requests",
        "query_too_long",
    ],
)
def test_sdk_accepts_every_error_code(code: SearchErrorCode) -> None:
    with _client(failed_answer("q", code, tool_use_id="srvtoolu_01x")) as client:
        msg = client.messages.create(model="m", max_tokens=1, messages=ASK, tools=TOOLS)
    result = msg.content[1]
    assert result.type == "web_search_tool_result"
    assert not isinstance(result.content, list) and result.content.error_code == code
