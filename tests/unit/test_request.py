"""kiro.request: one JSON fixture per behaviour under tests/fixtures/request/.

Each fixture is {"description", "conversation", "expected", "profile_arn"?}; `expected` is the
whole request body for conversation id "conv-1". The conversation uses a small JSON form of the
core dataclasses (see `load_conversation`; `"thinking": {"kind", "budget_tokens"?, "effort"?}`
sets `params.thinking`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from ki2api.core.messages import (
    Conversation,
    GenParams,
    ImagePart,
    Message,
    Part,
    TextPart,
    ThinkingConfig,
    ThinkingPart,
    ToolChoice,
    ToolResultPart,
    ToolSpec,
    ToolUsePart,
)
from ki2api.kiro.request.build import build_request, image_entry

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "request"
FIXTURE_FILES = sorted(FIXTURES.glob("*.json"))


def load_part(raw: dict[str, Any]) -> Part:
    kind = raw["type"]
    if kind == "text":
        return TextPart(raw["text"])
    if kind == "image":
        return ImagePart(raw["media_type"], raw["data_b64"])
    if kind == "thinking":
        return ThinkingPart(raw["text"], raw.get("signature"))
    if kind == "tool_use":
        return ToolUsePart(raw["id"], raw["name"], raw["input"])
    if kind == "tool_result":
        content = tuple(load_part(p) for p in raw["content"])
        assert all(isinstance(p, TextPart | ImagePart) for p in content)
        return ToolResultPart(raw["tool_use_id"], content, raw.get("is_error", False))  # type: ignore[arg-type]
    raise ValueError(f"unknown part type {kind!r}")


def load_message(raw: dict[str, Any]) -> Message:
    if "content" in raw:
        return Message(raw["role"], (TextPart(raw["content"]),))
    return Message(raw["role"], tuple(load_part(p) for p in raw["parts"]))


def load_thinking(raw: dict[str, Any] | None) -> ThinkingConfig | None:
    if raw is None:
        return None
    return ThinkingConfig(raw["kind"], raw.get("budget_tokens"), raw.get("effort"))


def load_conversation(raw: dict[str, Any]) -> Conversation:
    choice = raw.get("tool_choice", {})
    return Conversation(
        model_id=raw["model_id"],
        messages=tuple(load_message(m) for m in raw["messages"]),
        system=tuple(raw.get("system", ())),
        tools=tuple(
            ToolSpec(t["name"], t["description"], t.get("input_schema"))
            for t in raw.get("tools", ())
        ),
        tool_choice=ToolChoice(
            choice.get("mode", "auto"), choice.get("name"), choice.get("parallel", True)
        ),
        params=GenParams(thinking=load_thinking(raw.get("thinking"))),
    )


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[p.stem for p in FIXTURE_FILES])
def test_fixture(path: Path) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    conv = load_conversation(data["conversation"])
    body = build_request(conv, conversation_id="conv-1", profile_arn=data.get("profile_arn"))
    assert body == data["expected"], data["description"]
    json.dumps(body)  # serialisable as is


def test_there_are_fixtures() -> None:
    assert len(FIXTURE_FILES) >= 20


def test_deterministic_and_input_untouched() -> None:
    data = json.loads((FIXTURES / "tool_round_trip.json").read_text(encoding="utf-8"))
    conv = load_conversation(data["conversation"])
    before = copy.deepcopy(conv)
    first = build_request(conv, conversation_id="c", profile_arn=None)
    assert build_request(conv, conversation_id="c", profile_arn=None) == first
    assert conv == before


def test_read_only_mappings_become_plain_json() -> None:
    schema = MappingProxyType({"type": "object", "properties": MappingProxyType({})})
    conv = Conversation(
        model_id="m",
        messages=(
            Message("user", (TextPart("go"),)),
            Message("assistant", (ToolUsePart("t1", "f", MappingProxyType({"a": (1, 2)})),)),
            Message("user", (ToolResultPart("t1", (TextPart("r"),)),)),
        ),
        tools=(ToolSpec("f", "d", schema),),
    )
    body = build_request(conv, conversation_id="c", profile_arn=None)
    text = json.dumps(body)
    assert '"input": {"a": [1, 2]}' in text
    assert '"json": {"type": "object", "properties": {}}' in text


def test_conversation_id_and_model_are_used() -> None:
    conv = Conversation(model_id="claude-opus-4.5", messages=(Message("user", (TextPart("x"),)),))
    body = build_request(conv, conversation_id="abc-123", profile_arn="")
    state = body["conversationState"]
    assert state["conversationId"] == "abc-123"
    assert state["currentMessage"]["userInputMessage"]["modelId"] == "claude-opus-4.5"
    assert "profileArn" not in body


@pytest.mark.parametrize(
    ("media_type", "fmt"),
    [
        ("image/png", "png"),
        ("image/jpeg", "jpeg"),
        ("image/jpg", "jpeg"),
        ("IMAGE/WEBP", "webp"),
        ("image/gif; charset=binary", "gif"),
        ("image/bmp", None),
        ("image/svg+xml", None),
        ("", None),
    ],
    ids=["png", "jpeg", "jpg", "upper", "params", "bmp", "svg", "empty"],
)
def test_image_format(media_type: str, fmt: str | None) -> None:
    entry = image_entry(ImagePart(media_type, "QUJD"))
    assert (entry["format"] if entry else None) == fmt
    if entry:
        assert entry["source"] == {"bytes": "QUJD"}
