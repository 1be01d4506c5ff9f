"""Web search, the pure parts: detecting Claude Code's sub-request
(frontends/anthropic/websearch.py), the JSON-RPC request and parsing the answer (kiro/mcp.py)."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.messages import Conversation, ImagePart, Message, TextPart, ToolResultPart
from ki2api.core.search_results import WebSearchResult
from ki2api.frontends.anthropic.websearch import (
    is_web_search_tool,
    search_query,
    web_search_request_query,
)
from ki2api.kiro.login.credentials import AuthSnapshot
from ki2api.kiro.mcp import (
    build_mcp_request,
    mcp_headers,
    new_mcp_request_id,
    parse_mcp_response,
)

WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 8}
CUSTOM = {"name": "Read", "description": "x", "input_schema": {"type": "object"}}


@pytest.mark.parametrize(
    ("tool", "expected"),
    [
        (WEB_SEARCH, True),
        ({"type": "web_search_20260209", "name": "web_search"}, True),
        ({"type": "web_search_20250305"}, True),
        ({"name": "web_search", "input_schema": {"type": "object"}}, False),
        ({"type": "custom", "name": "web_search"}, False),
        ({"type": "web_fetch_20250910", "name": "web_fetch"}, False),
        ({"type": "web_search_tool_result"}, False),
        ({"type": "web_search_"}, False),
        ({"type": "web_search_2025０３05"}, False),
        ({"type": None}, False),
        (CUSTOM, False),
    ],
    ids=[
        "20250305",
        "later-version",
        "no-name",
        "custom-named-web_search",
        "type-custom",
        "web-fetch",
        "block-type-not-tool",
        "no-version",
        "non-ascii-digits",
        "type-null",
        "client-tool",
    ],
)
def test_is_web_search_tool(tool: dict[str, Any], expected: bool) -> None:
    assert is_web_search_tool(tool) is expected


def user(*parts: Any) -> Message:
    return Message("user", tuple(TextPart(p) if isinstance(p, str) else p for p in parts))


ASK = "Perform a web search for the query: kiro ide release notes"
IMG = ImagePart("image/png", "AAAA")


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ((user(ASK),), "kiro ide release notes"),
        ((user("  \n" + ASK + "  \n"),), "kiro ide release notes"),
        ((user("<system-reminder>x</system-reminder>", ASK),), "kiro ide release notes"),
        ((user(IMG, ASK),), "kiro ide release notes"),
        (
            (user("hi"), Message("assistant", (TextPart("yo"),)), user(ASK)),
            "kiro ide release notes",
        ),
        ((user("Perform a web search for the query:    "),), None),
        ((user("perform a web search for the query: x"),), None),
        ((user("Search the web for: x"),), None),
        ((user(ASK), Message("assistant", (TextPart("ok"),))), None),
        ((user(ToolResultPart("t1", (TextPart(ASK),))),), None),
        ((), None),
    ],
    ids=[
        "claude-code",
        "surrounding-space",
        "second-text-part",
        "after-image",
        "last-of-several",
        "empty-query",
        "wrong-case",
        "other-wording",
        "last-is-assistant",
        "inside-tool-result",
        "no-messages",
    ],
)
def test_search_query(messages: tuple[Message, ...], expected: str | None) -> None:
    assert search_query(messages) == expected
    assert search_query(Conversation("m", messages)) == expected


@pytest.mark.parametrize(
    ("tools", "expected"),
    [
        ([WEB_SEARCH], "kiro ide release notes"),
        (
            [WEB_SEARCH, {"type": "web_search_20260209", "name": "web_search"}],
            "kiro ide release notes",
        ),
        ([WEB_SEARCH, CUSTOM], None),
        ([CUSTOM], None),
        ([], None),
    ],
    ids=["only-web-search", "two-versions", "mixed-with-client-tool", "client-only", "no-tools"],
)
def test_web_search_request_query(tools: list[dict[str, Any]], expected: str | None) -> None:
    assert web_search_request_query(tools, Conversation("m", (user(ASK),))) == expected


def test_tools_may_be_wire_models() -> None:
    class Tool:
        def __init__(self, type: str | None) -> None:
            self.type = type

    conv = (user(ASK),)
    assert web_search_request_query([Tool("web_search_20250305")], conv) == "kiro ide release notes"
    assert web_search_request_query([Tool("web_search_20250305"), Tool(None)], conv) is None
    assert is_web_search_tool(object()) is False


def test_web_search_request_query_needs_the_prompt() -> None:
    assert web_search_request_query([WEB_SEARCH], (user("what is new in python?"),)) is None


def test_build_mcp_request() -> None:
    assert build_mcp_request('a "b" ü', request_id="rid-1") == {
        "id": "rid-1",
        "jsonrpc": "2.0",
        "method": "tools/call",
        "params": {"name": "web_search", "arguments": {"query": 'a "b" ü'}},
    }


def test_new_mcp_request_id_has_the_ide_form() -> None:
    a, b = new_mcp_request_id(1_700_000_000_123), new_mcp_request_id()
    assert re.fullmatch(r"web_search_tooluse_[A-Za-z0-9]{22}_1700000000123_[a-z0-9]{8}", a)
    assert re.fullmatch(r"web_search_tooluse_[A-Za-z0-9]{22}_\d{13}_[a-z0-9]{8}", b)
    assert a != new_mcp_request_id(1_700_000_000_123)


ARN = "arn:aws:codewhisperer:us-east-1:111122223333:profile/ABCDEFGHIJKL"
OTHER_ARN = "arn:aws:codewhisperer:us-east-1:444455556666:profile/ZZZZZZZZZZZZ"


@pytest.mark.parametrize(
    ("login_arn", "configured", "expected"),
    [(ARN, None, ARN), (ARN, OTHER_ARN, ARN), (None, OTHER_ARN, OTHER_ARN), (None, None, None)],
    ids=["login", "login-wins", "configured", "none"],
)
def test_mcp_headers(login_arn: str | None, configured: str | None, expected: str | None) -> None:
    auth = AuthSnapshot("acct", "tok-123", login_arn, "social", None)
    headers = mcp_headers(auth, invocation_id="inv-1", profile_arn=configured)
    assert headers.get("x-amzn-kiro-profile-arn") == expected
    assert headers["authorization"] == "Bearer tok-123"
    assert headers["amz-sdk-invocation-id"] == "inv-1"
    assert headers["content-type"] == "application/json"
    assert "KiroIDE-" in headers["user-agent"] and "KiroIDE-" in headers["x-amz-user-agent"]


def answer(inner: Any, *, is_error: bool = False, raw_text: str | None = None) -> bytes:
    text = raw_text if raw_text is not None else orjson.dumps(inner).decode()
    result = {"content": [{"type": "text", "text": text}], "isError": is_error}
    return orjson.dumps({"jsonrpc": "2.0", "id": "rid", "result": result})


HIT = {
    "title": "Kiro",
    "url": "https://kiro.dev/",
    "snippet": "An IDE.",
    "publishedDate": 1_741_132_800_000,  # 2025-03-05T00:00:00Z
    "id": "x",
    "domain": "kiro.dev",
    "maxVerbatimWordLimit": 25,
    "publicDomain": False,
}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            answer({"results": [HIT], "totalResults": 1, "query": "kiro", "error": None}),
            [WebSearchResult("https://kiro.dev/", "Kiro", "An IDE.", "March 5, 2025")],
        ),
        (
            answer({"results": [{"url": "https://a.example/", "title": "A"}]}),
            [WebSearchResult("https://a.example/", "A", None, None)],
        ),
        (
            answer(
                {
                    "results": [
                        {"title": "no url"},
                        {"url": "", "title": "empty url"},
                        "junk",
                        {"url": "https://b.example/", "title": 7, "snippet": 3},
                        {"url": "https://c.example/", "title": "C", "publishedDate": "soon"},
                        {"url": "https://d.example/", "title": "D", "publishedDate": 1e300},
                    ]
                }
            ),
            [
                WebSearchResult("https://b.example/", "", None, None),
                WebSearchResult("https://c.example/", "C", None, None),
                WebSearchResult("https://d.example/", "D", None, None),
            ],
        ),
        (answer({"results": [], "totalResults": 0}), []),
        (answer({"totalResults": 0}), []),
        (orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": {"content": []}}), []),
        (
            orjson.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "error": None,
                    "result": {
                        "content": [
                            {"type": "image", "data": "x"},
                            {"type": "text", "text": orjson.dumps({"results": [HIT]}).decode()},
                        ]
                    },
                }
            ),
            [WebSearchResult("https://kiro.dev/", "Kiro", "An IDE.", "March 5, 2025")],
        ),
    ],
    ids=[
        "kiro-shape",
        "minimal-hit",
        "bad-entries-skipped-or-tolerated",
        "no-results",
        "results-missing",
        "empty-content",
        "first-text-content-and-null-error",
    ],
)
def test_parse_ok(body: bytes, expected: list[WebSearchResult]) -> None:
    assert parse_mcp_response(body) == expected


@pytest.mark.parametrize(
    ("body", "kind", "fragment"),
    [
        (
            orjson.dumps({"jsonrpc": "2.0", "id": 1, "error": {"code": -32603, "message": "boom"}}),
            ErrorKind.UPSTREAM_ERROR,
            "boom (JSON-RPC -32603)",
        ),
        (
            orjson.dumps({"jsonrpc": "2.0", "id": 1, "error": {"message": "no code"}}),
            ErrorKind.UPSTREAM_ERROR,
            "no code",
        ),
        (
            orjson.dumps({"jsonrpc": "2.0", "id": 1, "error": "flat"}),
            ErrorKind.UPSTREAM_ERROR,
            "flat",
        ),
        (answer(None, is_error=True, raw_text="quota hit"), ErrorKind.UPSTREAM_ERROR, "quota hit"),
        (answer({"results": [], "error": "search backend down"}), ErrorKind.UPSTREAM_ERROR, "down"),
        (b"<html>oops</html>", ErrorKind.UPSTREAM_PROTOCOL, "not JSON"),
        (b"", ErrorKind.UPSTREAM_PROTOCOL, "not JSON"),
        (b"[1, 2]", ErrorKind.UPSTREAM_PROTOCOL, "not an object"),
        (
            orjson.dumps({"jsonrpc": "2.0", "id": 1}),
            ErrorKind.UPSTREAM_PROTOCOL,
            "without a result",
        ),
        (
            orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": {"content": "x"}}),
            ErrorKind.UPSTREAM_PROTOCOL,
            "content list",
        ),
        (
            orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text"}]}}),
            ErrorKind.UPSTREAM_PROTOCOL,
            "without text",
        ),
        (
            answer(None, raw_text="not json"),
            ErrorKind.UPSTREAM_PROTOCOL,
            "results that are not JSON",
        ),
        (answer([1]), ErrorKind.UPSTREAM_PROTOCOL, "not a JSON object"),
        (answer({"results": {"a": 1}}), ErrorKind.UPSTREAM_PROTOCOL, "not a list"),
    ],
    ids=[
        "rpc-error",
        "rpc-error-no-code",
        "rpc-error-not-object",
        "tool-isError",
        "inner-error-field",
        "html",
        "empty-body",
        "json-array",
        "no-result",
        "content-not-list",
        "text-missing",
        "inner-not-json",
        "inner-not-object",
        "results-not-list",
    ],
)
def test_parse_errors(body: bytes, kind: ErrorKind, fragment: str) -> None:
    with pytest.raises(GatewayError) as info:
        parse_mcp_response(body)
    assert info.value.kind is kind
    assert fragment in info.value.message
    assert info.value.retryable is (kind is ErrorKind.UPSTREAM_PROTOCOL)
