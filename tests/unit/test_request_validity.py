"""kiro.request: whatever the conversation, the body has the shape Kiro accepts.

Checked on hand-picked awkward conversations and on seeded random ones (deterministic).
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from ki2api.core.messages import (
    Conversation,
    ImagePart,
    Message,
    Part,
    Role,
    TextPart,
    ThinkingPart,
    ToolResultPart,
    ToolSpec,
    ToolUsePart,
)
from ki2api.kiro.request.build import build_request

SYSTEM = "SYSTEM-PROMPT-MARKER"


def check_valid(conv: Conversation) -> None:
    body = build_request(conv, conversation_id="c", profile_arn=None)
    state = body["conversationState"]
    history: list[dict[str, Any]] = state["history"]
    current = state["currentMessage"]["userInputMessage"]
    roles = ["user" if "userInputMessage" in h else "assistant" for h in history]
    assert roles == ["user", "assistant"] * (len(history) // 2), roles  # starts user, alternates
    assert len(history) % 2 == 0  # so it ends with an assistant message

    users = [h["userInputMessage"] for h in history[0::2]] + [current]
    assistants = [h["assistantResponseMessage"] for h in history[1::2]]
    # text, or exactly "" on a turn that carries tool results (as real clients send it)
    assert all(u["content"].strip() or (u["content"] == "" and _results(u)) for u in users)
    assert all(a["content"].strip() for a in assistants)
    for i, user in enumerate(users):
        results = user.get("userInputMessageContext", {}).get("toolResults", [])
        uses = assistants[i - 1].get("toolUses", []) if i > 0 else []
        result_ids = [r["toolUseId"] for r in results]
        assert len(result_ids) == len(set(result_ids))  # no duplicates
        assert sorted(result_ids) == sorted(u["toolUseId"] for u in uses)  # 1:1 with the uses
        assert all(r["status"] in ("success", "error") and r["content"] for r in results)
    for user in users[:-1]:
        assert "tools" not in user.get("userInputMessageContext", {})
    offered = {t["toolSpecification"]["name"] for t in _tools(current)}
    assert {u["name"] for a in assistants for u in a.get("toolUses", [])} <= offered
    if conv.system:
        texts = [u["content"] for u in users]
        assert sum(SYSTEM in t for t in texts) == 1
        assert texts[0].startswith(SYSTEM)


def _results(user: dict[str, Any]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = user.get("userInputMessageContext", {}).get("toolResults", [])
    return results


def _tools(current: dict[str, Any]) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = current.get("userInputMessageContext", {}).get("tools", [])
    return tools


def conv(*messages: Message, system: bool = True, tools: bool = False) -> Conversation:
    specs = (ToolSpec("f", "d", {"type": "object", "properties": {}}),) if tools else ()
    return Conversation(
        "claude-sonnet-4", messages, system=(SYSTEM,) if system else (), tools=specs
    )


def u(*parts: Part | str) -> Message:
    return Message("user", tuple(TextPart(p) if isinstance(p, str) else p for p in parts))


def a(*parts: Part | str) -> Message:
    return Message("assistant", tuple(TextPart(p) if isinstance(p, str) else p for p in parts))


def use(i: str, name: str = "f") -> ToolUsePart:
    return ToolUsePart(i, name, {"k": i})


def res(i: str) -> ToolResultPart:
    return ToolResultPart(i, (TextPart(f"r-{i}"),))


IMG = ImagePart("image/png", "AAAA")

AWKWARD: list[tuple[str, Conversation]] = [
    ("empty", conv()),
    ("starts-with-assistant", conv(a("hi"), u("x"))),
    ("only-assistant", conv(a("prefill only"))),
    ("many-users", conv(u("1"), u("2"), u(""), u("4"))),
    ("many-assistants", conv(u("q"), a("1"), a(""), a("3"))),
    ("orphan-results", conv(u(res("nope")), a("x"), u(res("also-nope"), "text"))),
    ("prefill", conv(u("q"), a("partial"))),
    (
        "prefill-with-tool-use",
        conv(u("q"), a(use("t1"))),
    ),
    ("unanswered-tool-uses", conv(u("q"), a(use("t1"), use("t2")), u("ignored them"))),
    ("results-split-over-users", conv(u("q"), a(use("t1"), use("t2")), u(res("t1")), u(res("t2")))),
    ("duplicate-results", conv(u("q"), a(use("t1")), u(res("t1"), res("t1")))),
    ("results-for-older-turn", conv(u("q"), a(use("t1")), u(res("t1")), a("k"), u(res("t1")))),
    ("tools-without-specs", conv(u("q"), a(use("t1", "read")), u(res("t1")), tools=False)),
    ("images-everywhere", conv(u(IMG), a(IMG), u(IMG, ImagePart("image/bmp", "Qk0=")))),
    ("thinking-only-assistant", conv(u("q"), a(ThinkingPart("")), u("z"))),
    ("no-system", conv(a("x"), system=False)),
    ("tool-use-in-user-message", conv(u(use("t9")), a(res("t9")))),
]


@pytest.mark.parametrize("conversation", [c for _, c in AWKWARD], ids=[n for n, _ in AWKWARD])
def test_awkward_conversations_are_valid(conversation: Conversation) -> None:
    check_valid(conversation)


def random_conversation(rng: random.Random) -> Conversation:
    messages: list[Message] = []
    ids: list[str] = []
    for n in range(rng.randint(0, 9)):
        role: Role = rng.choice(("user", "assistant"))
        parts: list[Part] = []
        for _ in range(rng.randint(0, 3)):
            pick = rng.random()
            if pick < 0.35:
                parts.append(TextPart(rng.choice(("", "text", " "))))
            elif pick < 0.5:
                parts.append(IMG)
            elif pick < 0.75 or not ids:
                ids.append(f"t{n}-{len(parts)}")
                parts.append(use(ids[-1], rng.choice(("f", "g"))))
            else:
                parts.append(res(rng.choice(ids)))
        messages.append(Message(role, tuple(parts)))
    return conv(*messages, system=rng.random() < 0.7, tools=rng.random() < 0.5)


@pytest.mark.parametrize("seed", range(25))
def test_random_conversations_are_valid(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(40):
        check_valid(random_conversation(rng))
