"""Tools end to end: official SDK (strict) -> gateway -> emulator (which validates like Kiro).

Long names are shortened upstream and restored for the client; long descriptions are accepted;
parallel calls get indexes 0, 1; truncated tool input is an error the client can act on;
`[Called NAME with args: ...]` text becomes a tool call; tool_choice / parallel_tool_calls.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from ki2api.kiro.request.tools import INSTRUCTIONS, shorten_tool_name
from tests.conftest import API_KEY, Gateway
from tests.support.payloads import WEATHER_TOOL

MODEL = "claude-sonnet-4-20250514"
LONG = "mcp__project_files__read_the_whole_file_with_line_numbers_and_metadata"
SHORT = shorten_tool_name(LONG)
PATH_SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
LONG_TOOL: Any = {
    "type": "function",
    "function": {"name": LONG, "description": "Reads a file.", "parameters": PATH_SCHEMA},
}
TOOLS: Any = [WEATHER_TOOL, LONG_TOOL]


def emu(**directive: Any) -> str:
    return f"<emu>{json.dumps(directive)}</emu>"


def user(text: str) -> Any:
    return {"role": "user", "content": text}


def sent(gateway: Gateway) -> dict[str, Any]:
    """The last request body the emulator received."""
    body: dict[str, Any] = gateway.emulator_requests()[-1]["body"]
    return body


def offered(body: dict[str, Any]) -> list[dict[str, Any]]:
    current = body["conversationState"]["currentMessage"]["userInputMessage"]
    tools: list[dict[str, Any]] = current.get("userInputMessageContext", {}).get("tools", [])
    return [t["toolSpecification"] for t in tools]


def streamed(client: openai.OpenAI, **kwargs: Any) -> Any:
    state = ChatCompletionStreamState()
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    for chunk in chunks:
        state.handle_chunk(chunk)
    return chunks, state.get_final_completion()


def calls_of(completion: Any) -> list[tuple[str, str, Any]]:
    return [
        (c.id, c.function.name, json.loads(c.function.arguments))
        for c in completion.choices[0].message.tool_calls or ()
    ]


def raw_calls(completion: Any) -> list[tuple[str, str, str, str]]:
    """Each call exactly as sent: id, type, name, the arguments text."""
    return [
        (c.id, c.type, c.function.name, c.function.arguments)
        for c in completion.choices[0].message.tool_calls or ()
    ]


def test_a_70_character_name_is_shortened_upstream_and_restored(gateway: Gateway) -> None:
    assert len(LONG) == 70 and len(SHORT) <= 64
    client = gateway.openai()
    directive = emu(tool_calls=[{"name": SHORT, "toolUseId": "tu1", "input": {"path": "a"}}])
    messages: Any = [user("read it " + directive)]
    whole = client.chat.completions.create(model=MODEL, tools=TOOLS, messages=messages)
    assert [s["name"] for s in offered(sent(gateway))] == ["get_weather", SHORT]
    assert whole.choices[0].finish_reason == "tool_calls"
    assert calls_of(whole) == [("tu1", LONG, {"path": "a"})]

    chunks, final = streamed(client, model=MODEL, tools=TOOLS, messages=messages)
    assert calls_of(final) == calls_of(whole)
    names = [
        tc.function.name
        for c in chunks
        for tc in (c.choices[0].delta.tool_calls or () if c.choices else ())
        if tc.function and tc.function.name
    ]
    assert names == [LONG]

    follow = client.chat.completions.create(  # the history goes back with the short name
        model=MODEL,
        tools=TOOLS,
        messages=[
            *messages,
            whole.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": "tu1", "content": "file body"},
            user("thanks"),
        ],
    )
    assert follow.choices[0].message.content == "Echo: thanks"
    history = sent(gateway)["conversationState"]["history"]
    assert history[1]["assistantResponseMessage"]["toolUses"][0]["name"] == SHORT


def test_a_12000_character_description_is_accepted(gateway: Gateway) -> None:
    description = "Edits a file. " + "Mind the rules. " * 750
    assert len(description) > 12_000
    tool: Any = {
        "type": "function",
        "function": {"name": "edit", "description": description, "parameters": PATH_SCHEMA},
    }
    resp = gateway.openai().chat.completions.create(
        model=MODEL, tools=[tool], messages=[user("hello")]
    )
    assert resp.choices[0].message.content is not None
    body = sent(gateway)
    spec = offered(body)[0]
    assert spec["description"].startswith("Edits a file.") and len(spec["description"]) < 500
    content = body["conversationState"]["currentMessage"]["userInputMessage"]["content"]
    assert description.strip() in content


def test_parallel_calls_get_indexes_0_and_1_and_the_stream_agrees(gateway: Gateway) -> None:
    client = gateway.openai()
    directive = emu(
        tool_calls=[
            {"name": "get_weather", "toolUseId": "tu1", "input": {"city": "Paris"}, "fragments": 5},
            {"name": SHORT, "toolUseId": "tu2", "input": {"path": "/tmp/a b"}, "fragments": 3},
        ]
    )
    kwargs: Any = {"model": MODEL, "tools": TOOLS, "messages": [user("both " + directive)]}
    whole = client.chat.completions.create(**kwargs)
    assert calls_of(whole) == [
        ("tu1", "get_weather", {"city": "Paris"}),
        ("tu2", LONG, {"path": "/tmp/a b"}),
    ]
    chunks, final = streamed(client, **kwargs)
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    assert sorted({d.index for d in deltas}) == [0, 1]
    firsts = [d for d in deltas if d.id]
    assert [(d.index, d.id, d.type) for d in firsts] == [
        (0, "tu1", "function"),
        (1, "tu2", "function"),
    ]
    assert all(d.function and d.function.arguments == "" for d in firsts)
    assert raw_calls(final) == raw_calls(whole)
    assert final.choices[0].finish_reason == whole.choices[0].finish_reason == "tool_calls"


def test_parallel_tool_calls_false_keeps_only_the_first_call(gateway: Gateway) -> None:
    client = gateway.openai()
    directive = emu(
        tool_calls=[
            {"name": "get_weather", "toolUseId": "tu1", "input": {"city": "Paris"}},
            {"name": "get_weather", "toolUseId": "tu2", "input": {"city": "Rome"}},
        ]
    )
    kwargs: Any = {
        "model": MODEL,
        "tools": TOOLS,
        "parallel_tool_calls": False,
        "messages": [user("one " + directive)],
    }
    whole = client.chat.completions.create(**kwargs)
    assert calls_of(whole) == [("tu1", "get_weather", {"city": "Paris"})]
    content = sent(gateway)["conversationState"]["currentMessage"]["userInputMessage"]["content"]
    assert content.endswith(INSTRUCTIONS["single"])
    _, final = streamed(client, **kwargs)
    assert calls_of(final) == calls_of(whole)


TRUNCATED = emu(tool_calls=[{"name": "get_weather", "raw_input": '{"city": "Par', "fragments": 2}])


def test_truncated_tool_input_is_a_502_with_advice(gateway: Gateway) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        gateway.openai().chat.completions.create(
            model=MODEL, tools=TOOLS, messages=[user("go " + TRUNCATED)]
        )
    assert info.value.status_code == 502
    message = info.value.body["message"]  # type: ignore[index]
    assert "'get_weather'" in message and "cut off" in message and "smaller pieces" in message


def test_truncated_tool_input_in_a_stream_is_an_error_event(gateway: Gateway) -> None:
    """The cut reaches the gateway after the call's start went out (paced fragments): the
    stream ends with the advice as an error event."""
    paced = emu(
        tool_calls=[{"name": "get_weather", "raw_input": '{"city": "Par', "fragments": 2}],
        delay_ms=40,
    )
    body = {
        "model": MODEL,
        "stream": True,
        "tools": TOOLS,
        "messages": [user("go " + paced)],
    }
    headers = {"Authorization": f"Bearer {API_KEY}"}
    url = f"{gateway.url}/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers=headers) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] != "data: [DONE]"
    error = json.loads(lines[-1][6:])["error"]
    assert "cut off" in error["message"] and "smaller pieces" in error["message"]
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks if c["choices"])
    with pytest.raises(openai.APIError):
        for _ in gateway.openai().chat.completions.create(
            model=MODEL, tools=TOOLS, messages=body["messages"], stream=True
        ):
            pass


def test_truncated_tool_input_in_one_burst_is_a_502_without_retries(gateway: Gateway) -> None:
    """The cut arrives with the call's start, before anything went out: a 502 with the advice,
    and not generated again (another account, or a second try, would be cut the same way)."""
    before = gateway.emulator_stats()["chat_requests"]
    with pytest.raises(openai.APIStatusError) as info:
        for _ in gateway.openai().chat.completions.create(
            model=MODEL, tools=TOOLS, messages=[user("go " + TRUNCATED)], stream=True
        ):
            pass
    assert info.value.status_code == 502
    assert "smaller pieces" in str(info.value)
    assert gateway.emulator_stats()["chat_requests"] == before + 1


@pytest.mark.parametrize("name", ["get_weather", LONG, SHORT], ids=["plain", "long", "short"])
def test_called_text_becomes_a_tool_call(gateway: Gateway, name: str) -> None:
    client = gateway.openai()
    text = f'On it.\n[Called {name} with args: {{"city": "Oslo ]"}}]'
    kwargs: Any = {
        "model": MODEL,
        "tools": TOOLS,
        "messages": [user("go " + emu(text=text, chunks=9))],
    }
    whole = client.chat.completions.create(**kwargs)
    expected = "get_weather" if name == "get_weather" else LONG
    [(_, got_name, args)] = calls_of(whole)
    assert (got_name, args) == (expected, {"city": "Oslo ]"})
    assert whole.choices[0].message.content == "On it."
    assert whole.choices[0].finish_reason == "tool_calls"
    _, final = streamed(client, **kwargs)
    assert [(n, a) for _, n, a in calls_of(final)] == [(expected, {"city": "Oslo ]"})]
    assert final.choices[0].message.content == "On it."


def test_called_text_for_a_tool_not_offered_stays_text(gateway: Gateway) -> None:
    text = "[Called delete_everything with args: {}]"
    resp = gateway.openai().chat.completions.create(
        model=MODEL, tools=TOOLS, messages=[user("go " + emu(text=text))]
    )
    assert resp.choices[0].message.content == text
    assert not resp.choices[0].message.tool_calls


def test_tool_choice_none_offers_no_tools_but_keeps_history_valid(gateway: Gateway) -> None:
    client = gateway.openai()
    messages: Any = [
        user("weather?"),
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "tu1",
                    "type": "function",
                    "function": {"name": LONG, "arguments": '{"path": "x"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "tu1", "content": "data"},
        user("summarise"),
    ]
    resp = client.chat.completions.create(
        model=MODEL, tools=TOOLS, tool_choice="none", messages=messages
    )
    assert resp.choices[0].message.content
    body = sent(gateway)
    specs = offered(body)
    assert [s["name"] for s in specs] == [SHORT]
    assert specs[0]["description"] == "Tool used earlier in this conversation."
    content = body["conversationState"]["currentMessage"]["userInputMessage"]["content"]
    assert content.endswith(INSTRUCTIONS["none"])


@pytest.mark.parametrize(
    ("choice", "instruction"),
    [
        ("required", INSTRUCTIONS["required"]),
        (
            {"type": "function", "function": {"name": LONG}},
            INSTRUCTIONS["tool"].format(name=SHORT),
        ),
    ],
    ids=["required", "named"],
)
def test_tool_choice_asks_for_a_call(gateway: Gateway, choice: Any, instruction: str) -> None:
    resp = gateway.openai().chat.completions.create(
        model=MODEL, tools=TOOLS, tool_choice=choice, messages=[user(f"call {SHORT}")]
    )
    assert calls_of(resp)[0][1] == LONG
    body = sent(gateway)
    assert [s["name"] for s in offered(body)] == ["get_weather", SHORT]
    content = body["conversationState"]["currentMessage"]["userInputMessage"]["content"]
    assert content.endswith(instruction)
