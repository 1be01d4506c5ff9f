"""Anthropic request -> Conversation: JSON fixtures {request, expected} and a table of refusals."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.messages import (
    Conversation,
    ImagePart,
    TextPart,
    ThinkingPart,
    ToolResultPart,
    ToolUsePart,
)
from ki2api.frontends.anthropic.to_core import to_conversation
from ki2api.frontends.anthropic.wire import parse_count_tokens_request, parse_messages_request

FIXTURES = Path(__file__).parents[1] / "fixtures" / "anthropic" / "to_core"
CASES = sorted(FIXTURES.glob("*.json"))
TAGS = {
    TextPart: "text",
    ImagePart: "image",
    ThinkingPart: "thinking",
    ToolUsePart: "tool_use",
    ToolResultPart: "tool_result",
}


def plain(value: Any) -> Any:
    """A Conversation as JSON-like data, each part tagged with its type."""
    if type(value) in TAGS:
        fields = {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"type": TAGS[type(value)], **fields}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def convert(request: dict[str, Any]) -> Conversation:
    return to_conversation(parse_messages_request(orjson.dumps(request)), "kiro-model")


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_fixture(path: Path) -> None:
    case = json.loads(path.read_text())
    got = plain(convert(case["request"]))
    got.pop("conversation_id")
    assert got.pop("native") == frozenset()  # set by the route from the catalogue entry
    assert got == case["expected"]


def test_count_tokens_request_has_no_max_tokens() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop_sequences": 1}
    conv = to_conversation(parse_count_tokens_request(orjson.dumps(body)), "k")
    assert conv.params.max_tokens is None
    assert conv.messages[0].parts == (TextPart("hi"),)


def msg(*blocks: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": list(blocks)}]}


PDF = {
    "type": "document",
    "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
}
REFUSED = [
    ("pdf document", msg(PDF), "messages.0.content.0.source", "PDF"),
    (
        "url document",
        msg({"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}),
        "messages.0.content.0.source",
        "text documents",
    ),
    (
        "bad image media type",
        msg(
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/bmp", "data": "AA=="},
            }
        ),
        "messages.0.content.0.source.media_type",
        "image/bmp",
    ),
    (
        "bad base64",
        msg(
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "!!"}}
        ),
        "messages.0.content.0.source.data",
        "base64",
    ),
    (
        "empty image",
        msg({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}}),
        "messages.0.content.0.source.data",
        "empty",
    ),
    (
        "url image without fetching",
        msg({"type": "image", "source": {"type": "url", "url": "https://x/a.png"}}),
        "messages.0.content.0.source",
        "KI2API_IMAGE_FETCH",
    ),
    (
        "file image",
        msg({"type": "image", "source": {"type": "file", "file_id": "file_1"}}),
        "messages.0.content.0",
        "File",
    ),
    (
        "tool_choice names an unknown tool",
        {**msg({"type": "text", "text": "x"}), "tool_choice": {"type": "tool", "name": "nope"}},
        "tool_choice.name",
        "nope",
    ),
]


@pytest.mark.parametrize(
    ("body", "param", "words"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_refused(body: dict[str, Any], param: str, words: str) -> None:
    with pytest.raises(GatewayError) as info:
        convert(body)
    assert info.value.kind is ErrorKind.INVALID_REQUEST
    assert info.value.param == param
    assert words in info.value.message
