"""Claude Code's WebSearch through Ki2API: served by Kiro's /mcp, answered as server-tool blocks."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Gateway

MODEL = "claude-sonnet-4-6"
SEARCH_TOOL: Any = {"type": "web_search_20250305", "name": "web_search", "max_uses": 8}


def ask(query: str) -> Any:
    return [{"role": "user", "content": f"Perform a web search for the query: {query}"}]


def run(gateway: Gateway, query: str, stream: bool) -> Any:
    client = gateway.anthropic()
    kwargs: Any = {
        "model": MODEL,
        "max_tokens": 1024,
        "tools": [SEARCH_TOOL],
        "messages": ask(query),
    }
    if not stream:
        return client.messages.create(**kwargs)
    with client.messages.stream(**kwargs) as s:
        return s.get_final_message()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_web_search_is_served_by_kiro_mcp(gateway: Gateway, stream: bool) -> None:
    message = run(gateway, "kiro gateway streaming", stream)
    kinds = [block.type for block in message.content]
    assert kinds[:2] == ["server_tool_use", "web_search_tool_result"] and kinds[-1] == "text"
    use, result = message.content[0], message.content[1]
    assert use.name == "web_search" and use.input == {"query": "kiro gateway streaming"}
    assert result.tool_use_id == use.id
    assert len(result.content) == 3 and all(
        hit.url.startswith("https://") for hit in result.content
    )
    assert message.stop_reason == "end_turn"
    assert message.usage.server_tool_use.web_search_requests == 1
    sent = [q for q in gateway.emulator_requests() if q["path"] == "/mcp"]
    assert sent and "kiro gateway streaming" in str(sent[-1]["body"])
    chats = [q for q in gateway.emulator_requests() if q["path"] != "/mcp"]
    assert chats == []  # no chat call was needed


def test_failed_search_is_a_result_error_not_a_failed_request(gateway: Gateway) -> None:
    message = run(gateway, "broken <emu-fail>", stream=False)
    result = message.content[1]
    assert result.type == "web_search_tool_result"
    assert result.content.type == "web_search_tool_result_error"


def test_search_tool_alongside_other_tools_goes_to_the_model(gateway: Gateway) -> None:
    client = gateway.anthropic()
    tools: Any = [
        SEARCH_TOOL,
        {"name": "read", "description": "Read a file", "input_schema": {"type": "object"}},
    ]
    message = client.messages.create(
        model=MODEL, max_tokens=256, tools=tools, messages=[{"role": "user", "content": "hello"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "Echo: hello"
    body = gateway.emulator_requests()[-1]["body"]
    offered = body["conversationState"]["currentMessage"]["userInputMessage"][
        "userInputMessageContext"
    ]["tools"]
    assert [t["toolSpecification"]["name"] for t in offered] == ["read"]  # server tool dropped


def test_tool_choice_naming_the_search_tool_is_accepted(gateway: Gateway) -> None:
    message = gateway.anthropic().messages.create(
        model=MODEL,
        max_tokens=256,
        tools=[SEARCH_TOOL],
        tool_choice={"type": "tool", "name": "web_search"},
        messages=ask("python asyncio shield"),
    )
    assert message.content[0].type == "server_tool_use"
