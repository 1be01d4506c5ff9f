"""to_conversation: JSON fixtures {request, expected conversation} and a table of refusals."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
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
from ki2api.core.models import ModelInfo, default_catalogue
from ki2api.frontends.openai.image_parts import image_part
from ki2api.frontends.openai.to_core import to_conversation
from ki2api.frontends.openai.wire import parse_chat_request

FIXTURES = Path(__file__).parents[1] / "fixtures" / "openai" / "to_core"
CASES = sorted(FIXTURES.glob("*.json"))
PART_TYPES = {
    TextPart: "text",
    ImagePart: "image",
    ThinkingPart: "thinking",
    ToolUsePart: "tool_use",
    ToolResultPart: "tool_result",
}
DEFAULTS: dict[str, Any] = {
    "system": [],
    "tools": [],
    "tool_choice": {"mode": "auto", "name": None, "parallel": True},
    "params": {
        "max_tokens": None,
        "temperature": None,
        "top_p": None,
        "stop": [],
        "thinking": None,
    },
    "conversation_id": None,
    "native": frozenset(),  # the model's native fields (the static table knows none)
}


def as_json(value: Any) -> Any:
    """Core values as plain JSON: parts get a `type` tag, tuples become lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: as_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
        tag = PART_TYPES.get(type(value))
        return {"type": tag, **fields} if tag else fields
    if isinstance(value, Mapping):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    return value


def model_for(name: str) -> ModelInfo:
    info = default_catalogue().resolve(name)
    assert info is not None
    return info


def convert(request: dict[str, Any]) -> Conversation:
    return to_conversation(parse_chat_request(orjson.dumps(request)), model_for(request["model"]))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_fixture(path: Path) -> None:
    case = json.loads(path.read_text())
    assert as_json(convert(case["request"])) == {**DEFAULTS, **case["expected"]}


def test_fixture_directory_is_not_empty() -> None:
    assert len(CASES) >= 10


def test_tool_inputs_are_independent_objects() -> None:
    request = {
        "model": "auto",
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "a"}}] * 2,
    }
    a, b = convert(request).tools
    assert a.input_schema == b.input_schema and a.input_schema is not b.input_schema


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(parts)}


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def call(arguments: str, name: str = "f") -> dict[str, Any]:
    function = {"name": name, "arguments": arguments}
    return {
        "role": "assistant",
        "tool_calls": [{"id": "c", "type": "function", "function": function}],
    }


TEXT = {"type": "text", "text": "look"}
ARGS = "messages.1.tool_calls.0.function.arguments"
IMG = "messages.0.content.1.image_url"
TOOLS = [{"type": "function", "function": {"name": "a"}}]

# (id, request fields over a one-message default, param, message fragment)
REFUSED: list[tuple[str, dict[str, Any], str, str]] = [
    ("n-2", {"n": 2}, "n", "n>1 is not supported"),
    ("audio-modality", {"modalities": ["text", "audio"]}, "modalities", "Audio output"),
    ("audio-param", {"audio": {"voice": "alloy", "format": "wav"}}, "audio", "Audio output"),
    (
        "input-audio",
        {
            "messages": [
                user(TEXT, {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}})
            ]
        },
        "messages.0.content.1",
        "Audio input",
    ),
    (
        "file",
        {"messages": [user({"type": "file", "file": {"file_data": "x"}})]},
        "messages.0.content.0",
        "File inputs",
    ),
    (
        "https-image",
        {"messages": [user(TEXT, image("https://example.com/a.png"))]},
        IMG,
        "not supported yet",
    ),
    ("http-image", {"messages": [user(TEXT, image("http://example.com/a.png"))]}, IMG, "data URL"),
    (
        "ftp-image",
        {"messages": [user(TEXT, image("ftp://example.com/a.png"))]},
        IMG,
        "Invalid image URL",
    ),
    ("no-scheme", {"messages": [user(TEXT, image("a.png"))]}, IMG, "Invalid image URL"),
    (
        "svg",
        {"messages": [user(TEXT, image("data:image/svg+xml;base64,PHN2Zz4="))]},
        IMG,
        "image/svg+xml",
    ),
    (
        "bmp",
        {"messages": [user(TEXT, image("data:image/bmp;base64,Qk0="))]},
        IMG,
        "Unsupported image media type",
    ),
    (
        "no-media-type",
        {"messages": [user(TEXT, image("data:;base64,Qk0="))]},
        IMG,
        "Unsupported image",
    ),
    (
        "not-base64-encoded",
        {"messages": [user(TEXT, image("data:image/png,rawbytes"))]},
        IMG,
        "base64-encoded",
    ),
    (
        "bad-base64",
        {"messages": [user(TEXT, image("data:image/png;base64,a*b="))]},
        IMG,
        "not valid base64",
    ),
    (
        "bad-padding",
        {"messages": [user(TEXT, image("data:image/png;base64,aGk"))]},
        IMG,
        "not valid base64",
    ),
    ("empty-image", {"messages": [user(TEXT, image("data:image/png;base64,"))]}, IMG, "empty"),
    (
        "no-comma",
        {"messages": [user(TEXT, image("data:image/png;base64"))]},
        IMG,
        "Invalid image data URL",
    ),
    ("args-not-json", {"messages": [user(TEXT), call("{city: Paris}")]}, ARGS, "not valid JSON"),
    ("args-truncated", {"messages": [user(TEXT), call('{"a": 1')]}, ARGS, "not valid JSON"),
    ("args-array", {"messages": [user(TEXT), call("[1, 2]")]}, ARGS, "JSON object"),
    ("args-null", {"messages": [user(TEXT), call("null")]}, ARGS, "JSON object"),
    ("required-without-tools", {"tool_choice": "required"}, "tool_choice", "at least one tool"),
    (
        "named-not-in-tools",
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "b"}}},
        "tool_choice",
        "'b'",
    ),
    (
        "named-without-tools",
        {"tool_choice": {"type": "function", "function": {"name": "a"}}},
        "tool_choice",
        "not in 'tools'",
    ),
]


@pytest.mark.parametrize(
    ("fields", "param", "fragment"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_refused(fields: dict[str, Any], param: str, fragment: str) -> None:
    request = {"model": "claude-sonnet-4-5", "messages": [user(TEXT)], **fields}
    with pytest.raises(GatewayError) as info:
        convert(request)
    assert info.value.kind is ErrorKind.INVALID_REQUEST
    assert info.value.param == param
    assert fragment in info.value.message


@pytest.mark.parametrize(
    ("url", "media_type", "data"),
    [
        ("data:image/png;base64,iVBORw0KGgo=", "image/png", "iVBORw0KGgo="),
        ("data:image/jpeg;base64,/9j/4AAQ", "image/jpeg", "/9j/4AAQ"),
        ("data:image/jpg;base64,/9j/4AAQ", "image/jpeg", "/9j/4AAQ"),
        ("data:Image/GIF;BASE64,R0lGODlh", "image/gif", "R0lGODlh"),
        ("data:image/webp;name=x.webp;base64,UklGRg==", "image/webp", "UklGRg=="),
        ("  data:image/png;base64,iVBO Rw0K\r\nGgo=  ", "image/png", "iVBORw0KGgo="),
    ],
    ids=["png", "jpeg", "jpg", "upper-case", "extra-parameter", "whitespace"],
)
def test_image_data_urls(url: str, media_type: str, data: str) -> None:
    assert image_part(url, param="p") == ImagePart(media_type=media_type, data_b64=data)
