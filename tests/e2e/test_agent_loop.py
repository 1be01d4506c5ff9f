"""An agent loop through Ki2API: five tool rounds, three tools (one with a 70-character name),
an image, parallel calls, stream and non-stream; every upstream request passes the emulator's
validation and carries native toolUses / toolResults (never prose)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ki2api.kiro.request.tools import assign_tool_names
from tests.conftest import Gateway
from tests.support.payloads import PNG_1X1

MODEL = "claude-sonnet-4-5"
LONG = "mcp__filesystem_server__read_a_text_file_from_the_workspace_directory"  # 70 chars


def tool(name: str, props: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"The {name} tool.",
            "parameters": {"type": "object", "properties": props, "required": list(props)},
        },
    }


TOOLS = [
    tool("get_weather", {"city": {"type": "string"}}),
    tool("run_shell", {"command": {"type": "string"}}),
    tool(LONG, {"path": {"type": "string"}}),
]
KIRO_NAMES = assign_tool_names(t["function"]["name"] for t in TOOLS)

# round -> the calls the scripted model makes (client names)
ROUNDS: list[list[tuple[str, dict[str, Any]]]] = [
    [("get_weather", {"city": "Paris"})],
    [(LONG, {"path": "README.md"})],
    [("run_shell", {"command": "ls"}), ("get_weather", {"city": "Rome"})],  # parallel
    [(LONG, {"path": "src/main.py"})],
    [("run_shell", {"command": "pytest -q"})],
]


def script(calls: list[tuple[str, dict[str, Any]]]) -> str:
    directive = {"tool_calls": [{"name": KIRO_NAMES[n], "input": a} for n, a in calls]}
    return f"<emu>{json.dumps(directive)}</emu>"


def create(gw: Gateway, messages: list[Any], stream: bool) -> Any:
    client = gw.openai()
    if not stream:
        return client.chat.completions.create(model=MODEL, tools=TOOLS, messages=messages)
    with client.chat.completions.stream(model=MODEL, tools=TOOLS, messages=messages) as s:
        for _ in s:
            pass
        return s.get_final_completion()


def check_upstream(gw: Gateway, expected_calls: int) -> None:
    sent = gw.emulator_requests()[-1]
    assert sent.get("status", 200) == 200, sent.get("rejected")
    state = sent["body"]["conversationState"]
    uses = [
        u
        for h in state["history"]
        for u in h.get("assistantResponseMessage", {}).get("toolUses", [])
    ]
    results = [
        r
        for h in [*state["history"], state["currentMessage"]]
        for r in h.get("userInputMessage", {})
        .get("userInputMessageContext", {})
        .get("toolResults", [])
    ]
    assert len(uses) == expected_calls and len(results) == expected_calls
    assert {u["toolUseId"] for u in uses} == {r["toolUseId"] for r in results}
    assert all(len(u["name"]) <= 64 for u in uses)
    assert "[Called" not in json.dumps(state)  # never flattened into prose


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_five_tool_rounds(gateway: Gateway, stream: bool) -> None:
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_1X1}"}}
    messages: list[Any] = [
        {"role": "system", "content": "You are a coding agent."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Look at this. " + script(ROUNDS[0])}, image],
        },
    ]
    done_calls = 0
    for n, calls in enumerate(ROUNDS):
        reply = create(gateway, messages, stream)
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        got = [
            (c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls
        ]
        assert got == calls  # the client sees its own (long) names and exact arguments
        messages.append(choice.message.model_dump(exclude_none=True))
        for c in choice.message.tool_calls:
            messages.append({"role": "tool", "tool_call_id": c.id, "content": f"ok {c.id}"})
        nxt = script(ROUNDS[n + 1]) if n + 1 < len(ROUNDS) else "Summarise."
        messages.append({"role": "user", "content": f"Continue. {nxt}"})
        if n:
            check_upstream(gateway, done_calls)
        done_calls += len(calls)
    final = create(gateway, messages, stream)
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content == "Echo: Continue. Summarise."
    check_upstream(gateway, done_calls)
    first = gateway.emulator_requests()[-len(ROUNDS) - 1]["body"]["conversationState"]
    assert first["currentMessage"]["userInputMessage"]["images"][0]["format"] == "png"
