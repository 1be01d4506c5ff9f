"""The Responses API's web_search tool, pure parts: the search function offered (and its name),
web_search_call items in the input, the builder's web_search_call items and events, and one
round of the loop's filter (search calls kept aside, client calls renumbered)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.events import (
    Event,
    MessageStop,
    TextDelta,
    ToolArgsDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from ki2api.core.messages import TextPart, ToolResultPart, ToolUsePart
from ki2api.core.models import ModelInfo, default_catalogue
from ki2api.frontends.openai.responses_from_core import ResponseBuilder
from ki2api.frontends.openai.responses_search import (
    SearchCall,
    SearchCalls,
    search_function_name,
    search_query_of,
    url_citations,
)
from ki2api.frontends.openai.responses_to_core import to_conversation
from ki2api.frontends.openai.responses_wire import parse_items, parse_responses_request
from ki2api.server.search_loop import _Round, _sum

FN: Any = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}


def model() -> ModelInfo:
    info = default_catalogue().resolve("claude-sonnet-4")
    assert info is not None
    return info


def convert(body: dict[str, Any], prior: list[Any] | None = None, texts: Any = None) -> Any:
    req = parse_responses_request(json.dumps({"model": "claude-sonnet-4", **body}).encode())
    return to_conversation(req, model(), prior=parse_items(prior or []), search_texts=texts)


@pytest.mark.parametrize(
    ("tools", "choice", "names", "mode"),
    [
        ([{"type": "web_search"}], None, ["web_search"], "auto"),
        ([{"type": "web_search_preview_2025_03_11"}, FN], None, ["lookup", "web_search"], "auto"),
        ([{"type": "web_search"}], "none", [], "none"),
        ([{"type": "web_search"}], "required", ["web_search"], "required"),
        ([{"type": "web_search"}], {"type": "web_search_preview"}, ["web_search"], "tool"),
        ([{**FN, "name": "web_search"}, {"type": "web_search"}], None, None, "auto"),
        ([FN], None, ["lookup"], "auto"),
    ],
)
def test_the_search_function_is_offered(
    tools: list[Any], choice: Any, names: list[str] | None, mode: str
) -> None:
    body: dict[str, Any] = {"input": "hi", "tools": tools}
    if choice is not None:
        body["tool_choice"] = choice
    conv = convert(body)
    if names is None:  # a client function named web_search: the search is kiro_web_search
        names = ["web_search", "kiro_web_search"]
    assert [t.name for t in conv.tools] == names
    assert conv.tool_choice.mode == mode


def test_search_function_names_never_clash() -> None:
    assert search_function_name([]) == "web_search"
    assert search_function_name(["web_search"]) == "kiro_web_search"
    taken = ["web_search", "kiro_web_search", "gateway_web_search", "web_search_2"]
    assert search_function_name(taken) == "web_search_3"


@pytest.mark.parametrize(
    ("arguments", "query"),
    [('{"query": " a b "}', "a b"), ('{"query": ""}', None), ("[1]", None), ("{bad", None)],
)
def test_query_of_a_call(arguments: str, query: str | None) -> None:
    assert search_query_of(arguments) == query


def test_a_web_search_call_item_is_the_call_and_what_the_model_read() -> None:
    item = {
        "type": "web_search_call",
        "id": "ws_1",
        "status": "completed",
        "action": {"type": "search", "query": "q"},
    }
    prior = [{"role": "user", "content": "first"}, item, {"role": "assistant", "content": "a"}]
    conv = convert({"input": "next"}, prior, {"ws_1": "RESULTS"})
    roles = [m.role for m in conv.messages]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    use, result = conv.messages[1].parts[0], conv.messages[2].parts[0]
    assert use == ToolUsePart(id="ws_1", name="web_search", input={"query": "q"})
    assert result == ToolResultPart(tool_use_id="ws_1", content=(TextPart("RESULTS"),))
    sourced = {**item, "action": {**item["action"], "sources": [{"type": "url", "url": "u1"}]}}
    conv = convert({"input": [sourced, {"role": "user", "content": "next"}]})
    text = conv.messages[1].parts[0]
    assert isinstance(text, ToolResultPart) and isinstance(text.content[0], TextPart)
    assert "u1" in text.content[0].text


def build(events: list[Event], calls: SearchCalls) -> tuple[ResponseBuilder, list[Any]]:
    builder = ResponseBuilder({"id": "resp_1"}, input_tokens=5, searches=calls)
    out = builder.start()
    for event in events:
        out.extend(builder.feed(event))
    return builder, out


def test_the_builder_renders_searches_as_web_search_call_items() -> None:
    calls = SearchCalls("web_search", sources=True)
    calls.calls["ws_a"] = SearchCall("q1", "completed", ("https://a",))
    calls.calls["ws_b"] = SearchCall("q2", "failed")
    events: list[Event] = [
        TextDelta("looking"),
        ToolCallStart(0, "ws_a", "web_search"),
        ToolCallEnd(0),
        ToolCallStart(1, "ws_b", "web_search"),
        ToolCallEnd(1),
        TextDelta("found"),
        MessageStop("end_turn"),
    ]
    builder, out = build(events, calls)
    final = builder.final
    assert final is not None
    assert [i["type"] for i in final["output"]] == [
        "message",
        "web_search_call",
        "web_search_call",
        "message",
    ]
    first, second = final["output"][1], final["output"][2]
    assert first == {
        "id": "ws_a",
        "type": "web_search_call",
        "status": "completed",
        "action": {
            "type": "search",
            "query": "q1",
            "sources": [{"type": "url", "url": "https://a"}],
        },
    }
    assert second["status"] == "failed"
    kinds = [e["type"] for e in out]
    assert kinds.count("response.web_search_call.searching") == 2
    assert kinds.count("response.web_search_call.completed") == 1  # not for the failed one
    assert [e["sequence_number"] for e in out] == list(range(len(out)))


def test_a_failure_during_a_search_leaves_the_call_incomplete() -> None:
    calls = SearchCalls("web_search")
    calls.calls["ws_a"] = SearchCall("q1")
    builder, _ = build([ToolCallStart(0, "ws_a", "web_search")], calls)
    events = builder.fail(GatewayError(ErrorKind.UPSTREAM_ERROR, "down"))
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["output"][0]["type"] == "web_search_call"
    assert failed["output"][0]["status"] == "incomplete"


def test_a_round_keeps_search_calls_aside_and_renumbers_client_calls() -> None:
    round_ = _Round("web_search", offset=3)
    out = round_.feed(
        [
            TextDelta("hm"),
            ToolCallStart(0, "t0", "web_search"),
            ToolArgsDelta(0, '{"query":'),
            ToolArgsDelta(0, '"x"}'),
            ToolCallEnd(0),
            ToolCallStart(1, "t1", "lookup"),
            ToolArgsDelta(1, "{}"),
            ToolCallEnd(1),
            Usage(10, 2),
            MessageStop("tool_use"),
        ]
    )
    assert out == [
        TextDelta("hm"),
        ToolCallStart(4, "t1", "lookup"),
        ToolArgsDelta(4, "{}"),
        ToolCallEnd(4),
    ]
    assert round_.queries() == ["x"] and round_.next_index == 5
    assert round_.usage == Usage(10, 2) and round_.stop == "tool_use"
    assert not round_.runs_searches()  # a client function was called too


def test_only_search_calls_run_searches_unless_cut() -> None:
    round_ = _Round("web_search", offset=0)
    round_.feed([ToolCallStart(0, "t0", "web_search"), ToolCallEnd(0), MessageStop("tool_use")])
    assert round_.runs_searches() and round_.queries() == [None]
    cut = _Round("web_search", offset=0)
    cut.feed([ToolCallStart(0, "t0", "web_search"), MessageStop("max_tokens")])
    assert not cut.runs_searches()


def test_usage_is_summed() -> None:
    total = _sum([Usage(10, 2, cache_read_input_tokens=4, estimated=False), Usage(20, 3)])
    assert (total.input_tokens, total.output_tokens) == (30, 5)
    assert total.cache_read_input_tokens == 4 and total.cache_creation_input_tokens is None
    assert total.estimated


def test_url_citations_cite_whole_result_urls() -> None:
    call = SearchCall("q", "completed", ("https://a.test/x", "https://a.test/x/y"), "", ("X", ""))
    text = "A https://a.test/x/y, B https://a.test/x. C https://a.test/xz"
    notes = url_citations(text, [call])
    assert [(text[n["start_index"] : n["end_index"]], n["title"]) for n in notes] == [
        ("https://a.test/x/y", "https://a.test/x/y"),  # the longest at its place; no title: URL
        ("https://a.test/x", "X"),
    ]  # not inside https://a.test/xz
    assert url_citations(text, [SearchCall("q", "failed")]) == []
