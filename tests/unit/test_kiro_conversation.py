"""kiro.conversation: one `conversationId` per client conversation, stable across its turns
(docs/kiro-protocol.md: real clients keep one per conversation), and the Anthropic frontend's
reading of Claude Code's session from `metadata.user_id`."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest

from ki2api.core.messages import Conversation, ImagePart, Message, TextPart, ToolResultPart
from ki2api.frontends.anthropic.to_core import client_session_id
from ki2api.kiro.accounts.policy import conversation_key
from ki2api.kiro.request.conversation_id import kiro_conversation_id, start_digest


def user(*parts: Any) -> Message:
    return Message("user", tuple(parts))


def asst(text: str) -> Message:
    return Message("assistant", (TextPart(text),))


IMG = ImagePart("image/png", "iVBORw0KGgo" * 50)
BASE = Conversation("claude-sonnet-4.5", (user(TextPart("hello")),), system=("be brief",))
NEXT = (*BASE.messages, asst("hi"), user(TextPart("more")))


@pytest.mark.parametrize(
    ("later", "same"),
    [
        (replace(BASE, messages=NEXT), True),
        (replace(BASE, messages=(*NEXT, asst("ok"), user(ToolResultPart("t1", ())))), True),
        (replace(BASE, messages=(user(TextPart("hello")), asst("a"), user(IMG))), True),
        (replace(BASE, model_id="claude-haiku-4.5"), True),  # a model switch keeps it
        (replace(BASE, params=replace(BASE.params, max_tokens=5)), True),
        (replace(BASE, system=("be verbose",)), False),
        (replace(BASE, system=()), False),
        (replace(BASE, messages=(user(TextPart("hello!")),)), False),
        (replace(BASE, messages=(user(TextPart("hello"), IMG),)), False),
        (replace(BASE, conversation_id="session-1"), False),
    ],
    ids=[
        "next-turn",
        "tool-round",
        "next-turn-image",
        "model",
        "params",
        "system",
        "no-system",
        "first-text",
        "image-added",
        "client-id",
    ],
)
def test_conversation_id_is_stable_across_turns(later: Conversation, same: bool) -> None:
    first = kiro_conversation_id(BASE)
    assert str(uuid.UUID(first)) == first  # UUID-shaped, as Kiro's own ids
    assert (kiro_conversation_id(later) == first) is same


def test_a_client_session_names_the_conversation_whatever_its_start() -> None:
    a = replace(BASE, conversation_id="session-1")
    b = replace(BASE, conversation_id="session-1", messages=(user(TextPart("other")),))
    c = replace(BASE, conversation_id="session-2")
    assert kiro_conversation_id(a) == kiro_conversation_id(b) != kiro_conversation_id(c)
    assert "session-1" not in kiro_conversation_id(a)  # the client's own id is not sent as is
    assert kiro_conversation_id(a) == str(uuid.UUID(kiro_conversation_id(a)))


def test_the_pool_key_uses_the_same_sources_plus_the_model() -> None:
    assert conversation_key(BASE) == start_digest(BASE, with_model=True)
    assert start_digest(BASE, with_model=False) != start_digest(BASE, with_model=True)
    later = replace(BASE, messages=NEXT)
    assert conversation_key(later) == conversation_key(BASE)
    assert conversation_key(replace(BASE, conversation_id="s")) == "s"


SESSION = "7f6c2b2e-1f2a-4c3d-9e8f-0a1b2c3d4e5f"
ACCOUNT = "1c2d3e4f-0000-4000-8000-000000000001"


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (
            {"user_id": f"user_{'ab' * 32}_account_{ACCOUNT}_session_{SESSION}"},
            SESSION,
        ),
        ({"user_id": f"user_{'ab' * 32}_account__session_{SESSION}"}, SESSION),
        (
            {"user_id": '{"device_id":"d","account_uuid":"a","session_id":"' + SESSION + '"}'},
            SESSION,
        ),
        ({"user_id": "alice@example.com"}, None),  # a user, not a conversation
        ({"user_id": '{"device_id":"d"}'}, None),
        ({"user_id": "{not json"}, None),
        ({"user_id": ""}, None),
        ({"user_id": 42}, None),
        ({}, None),
        (None, None),
        ("user_x_session_y", None),
    ],
    ids=[
        "claude-code",
        "claude-code-no-account",
        "json",
        "plain-user",
        "json-without-session",
        "bad-json",
        "empty",
        "not-a-string",
        "no-user-id",
        "no-metadata",
        "metadata-not-object",
    ],
)
def test_client_session_id(metadata: Any, expected: str | None) -> None:
    assert client_session_id(metadata) == expected
