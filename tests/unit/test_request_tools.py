"""kiro.request with tools: the name map, moved descriptions, and what the emulator accepts.

The emulator's validator (`kiro_emulator.validate.parse_chat`) is our stand-in for Kiro: every
body built here must pass it, whatever names, descriptions, schemas and tool_choice we start from.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from ki2api.core.messages import (
    Conversation,
    Message,
    TextPart,
    ToolChoice,
    ToolResultPart,
    ToolSpec,
    ToolUsePart,
)
from ki2api.kiro.request.build import build_kiro_request, build_request
from ki2api.kiro.request.tools import MAX_DESCRIPTION, TOOL_DOCS_HEADING, shorten_tool_name
from kiro_emulator.validate import parse_chat
from tests.unit.test_request import FIXTURE_FILES, load_conversation

LONG = "mcp__project_files__read_the_whole_file_with_line_numbers_and_metadata"
SHORT = shorten_tool_name(LONG)
OBJ: dict[str, Any] = {"type": "object", "properties": {"path": {"type": "string"}}}


def accepted(body: dict[str, Any]) -> dict[str, Any]:
    """The tools the emulator saw (it raises when it rejects the body)."""
    return parse_chat(orjson.dumps(body), "idc").tools


def user(text: str) -> Message:
    return Message("user", (TextPart(text),))


def test_the_name_map_goes_back_to_the_client_names() -> None:
    conv = Conversation(
        "claude-sonnet-4",
        (
            user("go"),
            Message("assistant", (ToolUsePart("t1", "fs.stat", {}),)),
            Message("user", (ToolResultPart("t1", (TextPart("ok"),)),)),
        ),
        tools=(ToolSpec(LONG, "Reads.", OBJ), ToolSpec("plain", "Plain.", OBJ)),
        tool_choice=ToolChoice(parallel=False),
    )
    req = build_kiro_request(conv, conversation_id="c", profile_arn=None)
    stat = shorten_tool_name("fs.stat")
    assert dict(req.tool_names) == {SHORT: LONG, stat: "fs.stat"}
    assert dict(req.text_call_names) == {LONG: LONG, SHORT: LONG, "plain": "plain"}
    assert req.single_tool_call is True
    assert set(accepted(req.body)) == {SHORT, "plain", stat}
    assert req.body == build_request(conv, conversation_id="c", profile_arn=None)


def test_no_tools_means_no_maps_and_no_single_call() -> None:
    conv = Conversation("claude-sonnet-4", (user("hi"),), tool_choice=ToolChoice(parallel=False))
    req = build_kiro_request(conv, conversation_id="c", profile_arn=None)
    assert (dict(req.tool_names), dict(req.text_call_names), req.single_tool_call) == (
        {},
        {},
        False,
    )


def test_tool_choice_none_recognises_no_text_calls() -> None:
    conv = Conversation(
        "claude-sonnet-4",
        (user("hi"),),
        tools=(ToolSpec("read", "Reads.", OBJ),),
        tool_choice=ToolChoice("none"),
    )
    req = build_kiro_request(conv, conversation_id="c", profile_arn=None)
    assert dict(req.text_call_names) == {}
    assert (
        "userInputMessageContext"
        not in req.body["conversationState"]["currentMessage"]["userInputMessage"]
    )


@pytest.mark.parametrize("with_history", [False, True], ids=["no-history", "history"])
def test_long_description_moves_to_the_system_text(with_history: bool) -> None:
    full = "Edits files. " + "Rule. " * (MAX_DESCRIPTION // 6 + 10)
    messages = (user("first"), Message("assistant", (TextPart("ok"),)), user("go"))
    conv = Conversation(
        "claude-sonnet-4",
        messages if with_history else (user("go"),),
        system=("Be brief.",),
        tools=(ToolSpec("edit", full, OBJ), ToolSpec("read", "Reads.", OBJ)),
    )
    body = build_request(conv, conversation_id="c", profile_arn=None)
    state = body["conversationState"]
    first = state["history"][0] if with_history else state["currentMessage"]
    text = first["userInputMessage"]["content"]
    assert text.startswith("Be brief.\n\n" + TOOL_DOCS_HEADING)
    assert f"## edit\n\n{full.strip()}" in text
    assert text.endswith("first" if with_history else "go")
    spec = state["currentMessage"]["userInputMessage"]["userInputMessageContext"]["tools"][0]
    assert spec["toolSpecification"]["description"].startswith("Edits files.")
    assert len(spec["toolSpecification"]["description"]) < 500
    assert set(accepted(body)) == {"edit", "read"}


# fixtures with images carry fake image bytes, which the emulator rightly refuses
NO_IMAGES = [p for p in FIXTURE_FILES if '"type": "image"' not in p.read_text(encoding="utf-8")]


@pytest.mark.parametrize("path", NO_IMAGES, ids=[p.stem for p in NO_IMAGES])
def test_every_fixture_body_is_accepted_by_the_emulator(path: Path) -> None:
    conv = load_conversation(json.loads(path.read_text(encoding="utf-8"))["conversation"])
    accepted(build_request(conv, conversation_id="c", profile_arn=None))


NAMES = ["read", LONG, "fs.stat", "9x", "y" * 64, "a-b", "über_tool", "x" * 200]
CHOICES = [
    ToolChoice(),
    ToolChoice("none"),
    ToolChoice("required"),
    ToolChoice("required", parallel=False),
    ToolChoice("tool", "read"),
    ToolChoice(parallel=False),
]


def random_tool_conversation(rng: random.Random) -> Conversation:
    messages: list[Message] = [user("start")]
    for turn in range(rng.randint(0, 5)):
        uses = [
            ToolUsePart(f"t{turn}-{k}", rng.choice(NAMES), {"k": k})
            for k in range(rng.randint(0, 3))
        ]
        messages.append(Message("assistant", (TextPart(rng.choice(("", "ok"))), *uses)))
        for use in uses:  # one tool message each, as the OpenAI frontend makes them
            if rng.random() < 0.8:
                messages.append(Message("user", (ToolResultPart(use.id, (TextPart("r"),)),)))
        if rng.random() < 0.3:
            messages.append(user("more"))
    offered = rng.sample(NAMES, rng.randint(0, 4))
    tools = tuple(
        ToolSpec(n, rng.choice(("", "d", "D" * (MAX_DESCRIPTION + 5))), rng.choice((OBJ, {}, None)))
        for n in offered
    )
    choice = rng.choice(CHOICES)
    if choice.mode == "tool":
        choice = ToolChoice("tool", offered[0]) if offered else ToolChoice()
    return Conversation("claude-sonnet-4", tuple(messages), tools=tools, tool_choice=choice)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(20))
def test_random_tool_conversations_are_accepted_by_the_emulator(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(25):
        conv = random_tool_conversation(rng)
        req = build_kiro_request(conv, conversation_id="c", profile_arn=None)
        tools = accepted(req.body)
        back = {req.tool_names.get(name, name) for name in tools}
        used = {u.name for m in conv.messages for u in m.parts if isinstance(u, ToolUsePart)}
        offered = set() if conv.tool_choice.mode == "none" else {t.name for t in conv.tools}
        assert back == used | offered
