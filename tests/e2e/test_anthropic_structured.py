"""Anthropic structured outputs and message threads end to end: the official anthropic SDK
(strict) -> gateway -> emulator (docs/api-compat.md §B.2).

`messages.parse` / `messages.stream(output_format=...)` with a pydantic model, the older
top-level `output_format`, an answer that does not match (502 `api_error`; streaming: the
in-stream `error` event and no `message_stop`), an unusable schema (400), and `thread`: a 400
with `error.details.error_code: "thread_unsupported_request"`, after which the SDK's
`beta.messages.tool_runner` sends the whole conversation and completes a tool round.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import httpx2
import pydantic
import pytest
from anthropic import beta_tool

from tests.conftest import API_KEY, Gateway

MODEL = "claude-sonnet-4-6"
KEY = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
PERSON_JSON = '{"name": "Ada", "age": 36}'
PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


class Person(pydantic.BaseModel):
    name: str
    age: int


def emu(**directive: Any) -> str:
    return f"<emu>{json.dumps(directive)}</emu>"


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def chat_bodies(gateway: Gateway) -> list[dict[str, Any]]:
    return [
        r["body"]
        for r in gateway.emulator_requests()
        if r["path"].endswith("generateAssistantResponse")
    ]


def sse_events(r: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    name = None
    for line in r.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            out.append((name or "", json.loads(line[6:])))
    return out


# --- output_config.format: messages.parse and messages.stream --------------------------------


@pytest.mark.parametrize(
    "answer",
    [PERSON_JSON, f"```json\n{PERSON_JSON}\n```"],
    ids=["bare", "fenced"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["parse", "stream"])
def test_parse_with_a_pydantic_model(gateway: Gateway, stream: bool, answer: str) -> None:
    client = gateway.anthropic()
    kwargs: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 500,
        "messages": user("who? " + emu(text=answer, chunks=5)),
        "output_format": Person,
    }
    if stream:
        with client.messages.stream(**kwargs) as s:
            message = s.get_final_message()
    else:
        message = client.messages.parse(**kwargs)
    assert message.parsed_output == Person(name="Ada", age=36)
    assert message.stop_reason == "end_turn"
    assert [b.type for b in message.content] == ["text"]
    assert json.loads(message.content[0].text) == {"name": "Ada", "age": 36}  # fence stripped
    sent = json.dumps(chat_bodies(gateway)[-1])
    assert "validates against the JSON Schema" in sent and "additionalProperties" in sent


def test_output_config_format_as_a_plain_schema(gateway: Gateway) -> None:
    client = gateway.anthropic()
    message = client.messages.create(
        model=MODEL,
        max_tokens=500,
        messages=user(emu(text=PERSON_JSON)),
        output_config={"format": {"type": "json_schema", "schema": PERSON_SCHEMA}},
    )
    assert message.content[0].type == "text"
    assert json.loads(message.content[0].text) == {"name": "Ada", "age": 36}


def test_count_tokens_counts_the_format_and_checks_it(gateway: Gateway) -> None:
    client = gateway.anthropic()
    plain = client.messages.count_tokens(model=MODEL, messages=user("hi"))
    structured = client.messages.count_tokens(
        model=MODEL,
        messages=user("hi"),
        output_config={"format": {"type": "json_schema", "schema": PERSON_SCHEMA}},
    )
    assert structured.input_tokens > plain.input_tokens + 40  # the instruction and the schema
    with pytest.raises(anthropic.BadRequestError):
        client.messages.count_tokens(
            model=MODEL,
            messages=user("hi"),
            output_config={"format": {"type": "json_schema", "schema": {"type": 1}}},
        )


# --- the older top-level output_format ---------------------------------------------------------


def test_legacy_output_format_is_enforced(gateway: Gateway) -> None:
    headers = {**KEY, "anthropic-beta": "structured-outputs-2025-11-13"}
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 500,
        "output_format": {"type": "json_schema", "schema": PERSON_SCHEMA},
    }
    ok = httpx.post(
        f"{gateway.url}/v1/messages?beta=true",
        json={**body, "messages": user(emu(text=f"```\n{PERSON_JSON}\n```"))},
        headers=headers,
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["content"] == [{"type": "text", "text": PERSON_JSON, "citations": None}]
    bad = httpx.post(
        f"{gateway.url}/v1/messages?beta=true",
        json={**body, "messages": user(emu(text='{"name": "Ada"}'))},
        headers=headers,
    )
    assert bad.status_code == 502
    error = bad.json()["error"]
    assert error["type"] == "api_error"
    assert "(output_format)" in error["message"] and "'age' is a required" in error["message"]


# --- an answer that does not match ------------------------------------------------------------


def test_a_non_matching_answer_is_a_502_api_error(gateway: Gateway) -> None:
    client = gateway.anthropic()
    with pytest.raises(anthropic.InternalServerError) as info:
        client.messages.parse(
            model=MODEL,
            max_tokens=500,
            messages=user("Sure! Here is a person: Ada, 36."),
            output_format=Person,
        )
    assert info.value.status_code == 502
    error = info.value.body["error"]  # type: ignore[index]
    assert error["type"] == "api_error"
    assert error["message"].startswith(
        "The model's answer was not valid JSON for the requested schema (output_config.format)"
    )
    assert error["details"] == {"error_code": "response_format_failed"}


def test_streaming_a_non_matching_answer_ends_with_an_error_event(gateway: Gateway) -> None:
    body = {
        "model": MODEL,
        "max_tokens": 500,
        "stream": True,
        "messages": user("x " + emu(text="Ada is 36 years old.", chunks=4, delay_ms=30)),
        "output_config": {"format": {"type": "json_schema", "schema": PERSON_SCHEMA}},
    }
    with httpx.stream("POST", f"{gateway.url}/v1/messages", json=body, headers=KEY) as r:
        assert r.status_code == 200
        events = sse_events(r)
    names = [n for n, _ in events]
    assert names[0] == "message_start" and "content_block_delta" in names
    assert names[-1] == "error" and "message_stop" not in names and "message_delta" not in names
    assert events[-1][1]["error"]["type"] == "api_error"
    assert events[-1][1]["error"]["details"] == {"error_code": "response_format_failed"}
    assert "(output_config.format)" in events[-1][1]["error"]["message"]
    client = gateway.anthropic()
    with (
        pytest.raises(anthropic.APIStatusError),
        client.messages.stream(
            model=MODEL,
            max_tokens=500,
            messages=user("x " + emu(text="Ada is 36.", chunks=4, delay_ms=30)),
            output_format=Person,
        ) as s,
    ):
        s.get_final_message()


def test_an_answer_calling_tools_or_cut_short_is_not_checked(gateway: Gateway) -> None:
    client = gateway.anthropic()
    cut = client.messages.create(
        model=MODEL,
        max_tokens=3,
        messages=user(emu(text="a long answer that is not JSON at all, cut by max_tokens")),
        output_config={"format": {"type": "json_schema", "schema": PERSON_SCHEMA}},
    )
    assert cut.stop_reason == "max_tokens"


# --- an unusable format ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"output_config": {"format": {"type": "json_schema", "schema": {"type": 7}}}},
         "output_config.format.schema"),
        ({"output_config": {"format": {"type": "json_schema"}}}, "output_config.format.schema"),
        ({"output_config": {"format": {"type": "text"}}}, "output_config.format.type"),
        ({"output_format": {"type": "json_schema", "schema": {"pattern": "(a)\\1"}}},
         "output_format.schema"),
        ({"output_format": {"type": "json_schema", "schema": PERSON_SCHEMA},
          "output_config": {"format": {"type": "json_schema", "schema": PERSON_SCHEMA}}},
         "output_format"),
    ],
    ids=["invalid-schema", "no-schema", "not-json-schema", "re2-pattern", "both"],
)  # fmt: skip
def test_an_unusable_format_is_a_400_naming_it(
    gateway: Gateway, fields: dict[str, Any], param: str
) -> None:
    client = gateway.anthropic()
    before = len(chat_bodies(gateway))
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model=MODEL, max_tokens=100, messages=user("hi"), extra_body=fields)
    error = info.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert param in error["message"], error["message"]  # Anthropic's errors carry no `param`
    assert len(chat_bodies(gateway)) == before  # nothing went upstream


# --- thread --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "thread",
    [{"type": "create"}, {"type": "continue", "previous_message_id": "msg_0123"}],
    ids=["create", "continue"],
)
def test_a_thread_is_refused_with_the_details_the_sdk_reads(
    gateway: Gateway, thread: dict[str, Any]
) -> None:
    client = gateway.anthropic()
    before = len(chat_bodies(gateway))
    with pytest.raises(anthropic.BadRequestError) as info:
        client.beta.messages.create(
            model=MODEL,
            max_tokens=100,
            messages=user("and then?"),
            thread=thread,  # type: ignore[arg-type]
        )
    assert info.value.status_code == 400
    error = info.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert error["details"] == {
        "error_code": "thread_unsupported_request",
        "unsupported": ["thread"],
    }
    assert len(chat_bodies(gateway)) == before  # never answered without the history


def test_tool_runner_resends_the_whole_conversation_and_completes_a_tool_round(
    gateway: Gateway,
) -> None:
    sent: list[dict[str, Any]] = []

    def record(request: httpx2.Request) -> None:
        if request.url.path.endswith("/v1/messages"):
            sent.append(json.loads(request.content))

    calls: list[str] = []

    @beta_tool
    def get_weather(city: str) -> str:
        """The weather in a city.

        Args:
            city: the city
        """
        calls.append(city)
        return f"sunny in {city}"

    http = httpx2.Client(event_hooks={"request": [record]})
    client = gateway.anthropic(http_client=http)
    try:
        runner = client.beta.messages.tool_runner(
            model=MODEL,
            max_tokens=500,
            tools=[get_weather],
            messages=user("please call get_weather"),
        )
        final = runner.until_done()
    finally:
        http.close()
    assert calls == ["x"]  # the emulator fills a string argument with "x"
    assert final.stop_reason == "end_turn" and final.content[0].type == "text"
    assert "thread" in sent[0]  # the SDK asked for a thread first ...
    assert all("thread" not in body for body in sent[1:])  # ... then went without one
    last = sent[-1]["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "user"]  # the whole conversation
    assert last[2]["content"][0]["type"] == "tool_result"
    upstream = chat_bodies(gateway)
    assert len(upstream) == 2  # the refused thread never reached Kiro
    history = upstream[-1]["conversationState"]["history"]
    assert "toolUses" in json.dumps(history)  # Kiro got the tool round's history
