"""OpenAI Responses API end to end: the official SDK (strict) -> gateway -> emulator, on uvicorn.

create / stream / parse, function tools (a tool round by function_call_output and by
previous_response_id, an agent loop), reasoning, max_output_tokens -> incomplete, hosted tools
refused, GET / DELETE, store=false, and an in-stream failure ending in response.failed."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import API_KEY, Gateway

MODEL = "claude-sonnet-4-20250514"
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def emu(**directive: Any) -> str:
    return f"<emu>{json.dumps(directive)}</emu>"


def test_create_with_a_string_input(gateway: Gateway) -> None:
    client = gateway.openai()
    resp = client.responses.create(model=MODEL, input="Hello there", metadata={"k": "v"})
    assert resp.object == "response" and resp.id.startswith("resp_")
    assert resp.status == "completed"
    assert resp.output_text == "Echo: Hello there"
    assert resp.metadata == {"k": "v"}
    assert [item.type for item in resp.output] == ["message"]
    usage = resp.usage
    assert usage is not None and usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_items_and_instructions(gateway: Gateway) -> None:
    client = gateway.openai()
    resp = client.responses.create(
        model=MODEL,
        instructions="Be brief.",
        input=[
            {"role": "developer", "content": "Speak English."},
            {"role": "user", "content": [{"type": "input_text", "text": "first question"}]},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
        ],
    )
    assert resp.output_text == "Echo: second question"
    assert resp.instructions == "Be brief."
    sent = gateway.emulator_requests()[-1]["body"]["conversationState"]
    history = json.dumps(sent["history"])
    assert "Be brief." in history and "Speak English." in history and "first answer" in history


def test_stream_event_sequence_and_final_response(gateway: Gateway) -> None:
    client = gateway.openai()
    with client.responses.stream(model=MODEL, input="stream me " + emu(chunks=5)) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert kinds.count("response.output_text.delta") >= 5
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.status == "completed"
    assert final.output_text.startswith("Echo: stream me")
    whole = client.responses.create(model=MODEL, input="stream me " + emu(chunks=5))
    assert whole.output_text == final.output_text


def raw_stream(gateway: Gateway, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/responses",
        json={"model": MODEL, "stream": True, **body},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    ) as r:
        assert r.status_code == 200
        text = r.read().decode()
    out = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_failure_after_the_first_byte_is_response_failed(gateway: Gateway) -> None:
    directive = emu(
        text="a b c d e f g h",
        chunks=8,
        delay_ms=30,  # the exception comes after the first content has been sent
        exception={"type": "ThrottlingException", "message": "Too many", "after_events": 3},
    )
    events = raw_stream(gateway, {"input": "hi " + directive})
    kinds = [name for name, _ in events]
    assert kinds[-2:] == ["error", "response.failed"]
    assert "response.completed" not in kinds
    assert all(name == data["type"] for name, data in events)
    failed = events[-1][1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "rate_limit_exceeded"
    assert any(name == "response.output_text.delta" for name in kinds)
    with pytest.raises(RuntimeError, match="response.completed"):  # the SDK: never a success
        with gateway.openai().responses.stream(model=MODEL, input="hi " + directive) as stream:
            for _ in stream:
                pass
            stream.get_final_response()


class Weather(BaseModel):
    city: str
    degrees: int


def test_parse_with_a_pydantic_model(gateway: Gateway) -> None:
    client = gateway.openai()
    answer = json.dumps({"city": "Paris", "degrees": 21})
    resp = client.responses.parse(
        model=MODEL, input="weather " + emu(text=answer), text_format=Weather
    )
    assert resp.output_parsed == Weather(city="Paris", degrees=21)
    sent = json.dumps(gateway.emulator_requests()[-1]["body"])
    assert "degrees" in sent  # the schema went upstream as an instruction


def test_parse_failure_is_a_502(gateway: Gateway) -> None:
    client = gateway.openai()
    with pytest.raises(openai.APIStatusError) as info:
        client.responses.parse(
            model=MODEL, input="weather " + emu(text="no json"), text_format=Weather
        )
    assert info.value.status_code == 502


def test_function_tool_round_by_items_and_by_previous_response_id(gateway: Gateway) -> None:
    client = gateway.openai()
    first = client.responses.create(model=MODEL, input="call get_weather", tools=[WEATHER])
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments).keys() == {"city"}
    result = {"type": "function_call_output", "call_id": calls[0].call_id, "output": "21 C"}
    # stateless: the whole conversation again
    again = client.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": "call get_weather"},
            *[c.model_dump() for c in calls],
            result,
        ],
        tools=[WEATHER],
        store=False,
    )
    assert again.status == "completed"
    # stateful: only the tool result
    follow = client.responses.create(
        model=MODEL, previous_response_id=first.id, input=[result], tools=[WEATHER]
    )
    assert follow.status == "completed" and follow.previous_response_id == first.id
    sent = json.dumps(gateway.emulator_requests()[-1]["body"]["conversationState"])
    assert "21 C" in sent and "call get_weather" in sent


def test_streamed_function_call(gateway: Gateway) -> None:
    client = gateway.openai()
    with client.responses.stream(model=MODEL, input="call get_weather", tools=[WEATHER]) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    call = final.output[-1]
    assert call.type == "function_call" and json.loads(call.arguments).keys() == {"city"}


@pytest.mark.long(12)
def test_agent_loop_of_five_rounds(gateway: Gateway) -> None:
    client = gateway.openai()
    resp = client.responses.create(model=MODEL, input="call get_weather", tools=[WEATHER])
    for round_ in range(5):
        call = next(item for item in resp.output if item.type == "function_call")
        resp = client.responses.create(
            model=MODEL,
            previous_response_id=resp.id,
            input=[
                {"type": "function_call_output", "call_id": call.call_id, "output": f"r{round_}"},
                {"role": "user", "content": "call get_weather"},
            ],
            tools=[WEATHER],
        )
        assert resp.status == "completed"
    history = json.dumps(gateway.emulator_requests()[-1]["body"]["conversationState"]["history"])
    assert all(f"r{i}" in history for i in range(4))


def test_reasoning_items(gateway: Gateway) -> None:
    client = gateway.openai()
    resp = client.responses.create(
        model=MODEL,
        input="think " + emu(reasoning="deep thoughts", text="done"),
        reasoning={"effort": "low"},
    )
    kinds = [item.type for item in resp.output]
    assert kinds == ["reasoning", "message"]
    assert resp.output[0].summary[0].text == "deep thoughts"
    assert resp.output_text == "done"
    with client.responses.stream(
        model=MODEL,
        input="think " + emu(reasoning="deep thoughts", text="done"),
        reasoning={"effort": "low"},
    ) as stream:
        names = [e.type for e in stream]
    assert "response.reasoning_summary_text.delta" in names


def test_max_output_tokens_makes_it_incomplete(gateway: Gateway) -> None:
    client = gateway.openai()
    long_text = "word " * 400
    resp = client.responses.create(
        model=MODEL, input="x " + emu(text=long_text), max_output_tokens=16
    )
    assert resp.status == "incomplete"
    assert resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_output_tokens"
    events = raw_stream(gateway, {"input": "x " + emu(text=long_text), "max_output_tokens": 16})
    assert events[-1][0] == "response.incomplete"


@pytest.mark.parametrize(
    "kind", ["file_search", "code_interpreter", "computer_use_preview", "image_generation", "mcp"]
)
def test_hosted_tools_are_refused(gateway: Gateway, kind: str) -> None:
    client = gateway.openai()
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="hi", tools=[{"type": kind}])  # type: ignore[list-item]
    body: Any = info.value.body
    assert body["type"] == "invalid_request_error" and kind in body["message"]
    assert body["param"] == "tools.0.type"


def test_get_and_delete(gateway: Gateway) -> None:
    client = gateway.openai()
    resp = client.responses.create(model=MODEL, input="keep me")
    got = client.responses.retrieve(resp.id)
    assert got.id == resp.id and got.output_text == resp.output_text
    client.responses.delete(resp.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(resp.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(resp.id)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="again", previous_response_id=resp.id)
    assert info.value.code == "previous_response_not_found"


def test_store_false_keeps_nothing(gateway: Gateway) -> None:
    client = gateway.openai()
    resp = client.responses.create(model=MODEL, input="forget me", store=False)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="again", previous_response_id=resp.id)
    body: Any = info.value.body
    assert body["param"] == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(resp.id)


def test_streamed_response_is_stored(gateway: Gateway) -> None:
    client = gateway.openai()
    with client.responses.stream(model=MODEL, input="stored stream") as stream:
        final = stream.get_final_response()
    got = client.responses.retrieve(final.id)
    assert got.output_text == final.output_text == "Echo: stored stream"


@pytest.mark.parametrize(
    "body",
    [
        {"model": MODEL, "input": 5},
        {"model": MODEL, "input": [{"type": "item_reference", "id": "x"}]},
        {"model": MODEL, "input": "x", "tool_choice": {"type": "file_search"}},
        {"model": MODEL, "input": "x", "text": {"format": {"type": "json_schema"}}},
        {"model": MODEL, "input": "x", "background": True},
        {
            "model": MODEL,
            "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1"}],
        },
        {"input": "x"},
        {"model": MODEL, "input": "x", "tools": [{"type": "function"}]},
        {"model": MODEL, "input": []},
        {"model": MODEL},
        {"model": MODEL, "input": "x", "tools": [5]},
        {"model": MODEL, "input": "x", "metadata": {"a": 1}},
        {"model": MODEL, "input": [{"type": None}]},
        {"model": MODEL, "input": [{"role": "user", "content": [{"type": "input_image"}]}]},
    ],
)
def test_bad_bodies_are_400s(gateway: Gateway, body: dict[str, Any]) -> None:
    r = httpx.post(
        f"{gateway.url}/v1/responses",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    assert r.status_code == 400, r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
