"""The Responses API's hosted web_search tool, run by the gateway on Kiro's search: the official
openai SDK -> gateway -> emulator (chat and /mcp), on uvicorn.

The emulator is scripted so that the model calls the search function: the query carries the
directive of the next turn, which comes back to the emulator in the search results (the
emulator reads directives from a tool-results turn, docs/emulator.md)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import openai
import pytest

from ki2api.state.sqlite import SQLiteStore
from tests.conftest import Gateway

MODEL = "claude-sonnet-4-20250514"
SEARCH: Any = {"type": "web_search"}
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def emu(**directive: Any) -> str:
    # `/` escaped: a directive nested in another's JSON keeps its `</emu>` out of the outer one
    return "<emu>" + json.dumps(directive).replace("/", "\\/") + "</emu>"


def searches(queries: list[str], answer: str, name: str = "web_search") -> str:
    """A directive: search each query in turn (one per round), then answer `answer`."""
    if not queries:
        return emu(text=answer)
    query = f"{queries[0]} {searches(queries[1:], answer, name)}"
    return emu(tool_calls=[{"name": name, "input": {"query": query}}])


def run(gateway: Gateway, stream: bool, **kwargs: Any) -> Any:
    client = gateway.openai()
    if not stream:
        return client.responses.create(model=MODEL, **kwargs)
    with client.responses.stream(model=MODEL, **kwargs) as s:
        events = list(s)
        final = s.get_final_response()
    final._events = events  # type: ignore[attr-defined]
    return final


def chats(gateway: Gateway) -> list[dict[str, Any]]:
    return [q for q in gateway.emulator_requests(200) if q["path"] != "/mcp"]


def mcp_queries(gateway: Gateway) -> list[str]:
    sent = [q for q in gateway.emulator_requests(200) if q["path"] == "/mcp"]
    return [q["body"]["params"]["arguments"]["query"] for q in sent]


def offered(chat: dict[str, Any]) -> list[str]:
    current = chat["body"]["conversationState"]["currentMessage"]["userInputMessage"]
    tools = current.get("userInputMessageContext", {}).get("tools", [])
    return [t["toolSpecification"]["name"] for t in tools]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_search_then_answer(gateway: Gateway, stream: bool) -> None:
    resp = run(
        gateway,
        stream,
        tools=[SEARCH],
        input="What is new? " + searches(["kiro gateway news"], "Here is what I found."),
    )
    assert resp.status == "completed"
    assert [item.type for item in resp.output] == ["web_search_call", "message"]
    call = resp.output[0]
    assert call.id.startswith("ws_") and call.status == "completed"
    assert call.action.type == "search" and call.action.query.startswith("kiro gateway news")
    assert resp.output_text == "Here is what I found."
    assert mcp_queries(gateway) == [call.action.query]
    first, second = chats(gateway)
    assert offered(first) == ["web_search"]
    sent = json.dumps(second["body"]["conversationState"])
    assert "toolUse" in sent and "result 1" in sent and "https://www.example.com/" in sent
    if stream:
        kinds = [e.type for e in resp._events]
        start = kinds.index("response.web_search_call.in_progress")
        assert kinds[start - 1 : start + 4] == [
            "response.output_item.added",
            "response.web_search_call.in_progress",
            "response.web_search_call.searching",
            "response.web_search_call.completed",
            "response.output_item.done",
        ]
        assert kinds[-1] == "response.completed"
        assert [e.sequence_number for e in resp._events] == list(range(len(kinds)))


def test_usage_sums_the_rounds(gateway: Gateway) -> None:
    client = gateway.openai()
    prompt = "Tell me. " + searches(["kiro usage"], "Done.")
    searched = client.responses.create(model=MODEL, tools=[SEARCH], input=prompt)
    plain = client.responses.create(model=MODEL, input="Tell me. " + emu(text="Done."))
    assert searched.usage is not None and plain.usage is not None
    # two rounds, the second with the first and the results in its input
    assert searched.usage.input_tokens > 2 * plain.usage.input_tokens
    assert searched.usage.output_tokens > plain.usage.output_tokens
    usage = searched.usage
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    rows = until_rows(gateway, 2)  # the usage log (and a client key's budget) has the sums
    assert [(r.input_tokens, r.output_tokens) for r in rows] == [
        (usage.input_tokens, usage.output_tokens),
        (plain.usage.input_tokens, plain.usage.output_tokens),
    ]
    assert [(r.endpoint, r.attempts) for r in rows] == [("/v1/responses", 2), ("/v1/responses", 1)]


def until_rows(gw: Gateway, count: int) -> list[Any]:
    """The first `count` usage rows of the gateway's store, by start (within 5 s)."""
    store = SQLiteStore.open(gw.settings.data_dir / "ki2api.sqlite3")
    deadline = time.monotonic() + 5
    try:
        while True:
            rows = sorted(asyncio.run(store.usage_rows(limit=count)), key=lambda r: r.at)
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.02)
    finally:
        store.close()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_failed_search_is_a_failed_call_and_the_model_answers(
    gateway: Gateway, stream: bool
) -> None:
    resp = run(
        gateway,
        stream,
        tools=[{"type": "web_search_preview"}],
        input="Look it up. " + searches(["broken <emu-fail>"], "I could not search."),
    )
    assert resp.status == "completed"
    assert [item.type for item in resp.output] == ["web_search_call", "message"]
    assert resp.output[0].status == "failed"
    assert resp.output_text == "I could not search."
    sent = json.dumps(chats(gateway)[-1]["body"]["conversationState"])
    assert "failed" in sent  # the model was told


def test_client_function_call_ends_the_loop(gateway: Gateway) -> None:
    client = gateway.openai()
    directive = emu(
        tool_calls=[
            {"name": "get_weather", "input": {"city": "Paris"}},
            {"name": "web_search", "input": {"query": "paris weather"}},
        ]
    )
    resp = client.responses.create(
        model=MODEL, tools=[SEARCH, WEATHER], input="Weather? " + directive
    )
    assert [item.type for item in resp.output] == ["function_call"]
    assert resp.output[0].name == "get_weather"
    assert mcp_queries(gateway) == []  # the search call of that turn was not run
    assert offered(chats(gateway)[-1]) == ["get_weather", "web_search"]


def test_a_client_function_named_web_search_keeps_its_name(gateway: Gateway) -> None:
    client = gateway.openai()
    own: Any = {**WEATHER, "name": "web_search", "description": "The client's own search"}
    resp = client.responses.create(
        model=MODEL,
        tools=[own, SEARCH],
        input="Find it. " + searches(["clash"], "Answered.", name="kiro_web_search"),
    )
    assert [item.type for item in resp.output] == ["web_search_call", "message"]
    assert offered(chats(gateway)[0]) == ["web_search", "kiro_web_search"]
    assert mcp_queries(gateway)[0].startswith("clash")
    called = client.responses.create(
        model=MODEL, tools=[own, SEARCH], input="Mine. " + emu(tool_calls=[{"name": "web_search"}])
    )
    assert [item.type for item in called.output] == ["function_call"]  # the client's function
    assert called.output[0].name == "web_search"


def test_at_most_three_search_rounds(gateway: Gateway) -> None:
    client = gateway.openai()
    prompt = "Dig. " + searches(["one", "two", "three", "four"], "never")
    resp = client.responses.create(model=MODEL, tools=[SEARCH], input=prompt)
    assert [item.type for item in resp.output].count("web_search_call") == 3
    assert [q.split()[0] for q in mcp_queries(gateway)] == ["one", "two", "three"]
    sent = chats(gateway)
    assert len(sent) == 4
    # the fourth answer is asked without the search function (its calls in the history keep a
    # placeholder spec) and for text only
    current = sent[-1]["body"]["conversationState"]["currentMessage"]["userInputMessage"]
    specs = current["userInputMessageContext"]["tools"]
    assert [s["toolSpecification"]["description"] for s in specs] == [
        "Tool used earlier in this conversation."
    ]
    assert "answer with text only" in current["content"]
    assert offered(sent[0]) == ["web_search"]
    assert resp.status == "completed"  # the emulator called it anyway: that call is dropped
    assert mcp_queries(gateway)[-1].startswith("three")


def test_continuation_after_a_search(gateway: Gateway) -> None:
    client = gateway.openai()
    first = client.responses.create(
        model=MODEL, tools=[SEARCH], input="Search. " + searches(["remember me"], "Noted.")
    )
    follow = client.responses.create(
        model=MODEL,
        tools=[SEARCH],
        previous_response_id=first.id,
        input="And now? " + emu(text="From memory."),
    )
    assert follow.output_text == "From memory."
    sent = json.dumps(chats(gateway)[-1]["body"]["conversationState"]["history"])
    # the results the model read, kept with the response
    assert " - result 1" in sent and "www.example.com/remember-me" in sent
    stored = client.responses.retrieve(first.id)
    assert [item.type for item in stored.output] == ["web_search_call", "message"]
    # the items passed back by the client, without the store
    again = client.responses.create(
        model=MODEL,
        store=False,
        input=[
            *[item.model_dump(exclude_none=True) for item in first.output],
            {"role": "user", "content": "Thanks " + emu(text="ok")},
        ],
    )
    assert again.output_text == "ok"


FAILING = emu(
    text="a b c d e f",
    chunks=6,
    delay_ms=20,
    exception={"type": "ThrottlingException", "message": "Too many", "after_events": 2},
)


def test_a_failed_answer_after_a_search_fails_the_response(gateway: Gateway) -> None:
    prompt = "Go. " + emu(tool_calls=[{"name": "web_search", "input": {"query": "x " + FAILING}}])
    with gateway.openai().responses.stream(model=MODEL, tools=[SEARCH], input=prompt) as stream:
        events = []
        with pytest.raises(RuntimeError, match="response.completed"):  # never a success
            for event in stream:
                events.append(event)
            stream.get_final_response()
    kinds = [e.type for e in events]
    assert "response.web_search_call.completed" in kinds
    assert kinds[-2:] == ["error", "response.failed"] and "response.completed" not in kinds
    failed = events[-1].response  # type: ignore[union-attr]
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "rate_limit_exceeded"
    client = gateway.openai().with_options(max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.responses.create(model=MODEL, tools=[SEARCH], input=prompt)
    assert caught.value.status_code in (429, 502, 503)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_result_urls_quoted_in_the_answer_are_url_citations(gateway: Gateway, stream: bool) -> None:
    head = "citations please, with a query that is long enough to fill the whole slug"
    slug = re.sub(r"[^a-z0-9]+", "-", head.lower()).strip("-")[:60]  # the emulator's URLs
    url = f"https://www.example.com/{slug}/1"
    answer = f"See {url}. Also https://elsewhere.test/x."
    resp = run(
        gateway,
        stream,
        tools=[SEARCH],
        include=["web_search_call.action.sources"],
        input="Cite. " + searches([head], answer),
    )
    assert resp.output_text == answer
    assert [s.url for s in resp.output[0].action.sources][0] == url
    (note,) = resp.output[1].content[0].annotations
    assert note.type == "url_citation" and note.url == url
    assert answer[note.start_index : note.end_index] == url
    assert note.title.startswith(head)
    if stream:
        kinds = [e.type for e in resp._events]
        assert kinds.count("response.output_text.annotation.added") == 1
