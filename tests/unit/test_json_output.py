"""frontends/json_output.py neutral of dialect: a format built from a plain JSON schema with the
param a dialect names (Anthropic's `output_config.format`, no name), its 400s and its 502."""

from __future__ import annotations

from typing import Any

import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.events import Event, MessageStop, TextDelta
from ki2api.frontends.json_output import (
    StreamJSONCheck,
    check_content,
    instruction,
    json_object_format,
    json_schema_format,
    require_name,
)

PARAM = "output_config.format"
SCHEMA_PARAM = "output_config.format.schema"
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}},
    "required": ["name"],
    "additionalProperties": False,
}


def fmt(schema: Any = PERSON, **kw: Any) -> Any:
    return json_schema_format(schema, schema_param=SCHEMA_PARAM, param=PARAM, **kw)


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ([1], f"Invalid type for '{SCHEMA_PARAM}': expected an object."),
        ({"type": 5}, f"Invalid '{SCHEMA_PARAM}': not a valid JSON Schema"),
        ({"$ref": "https://x.example/s.json"}, "only local references"),
        ({"type": "string", "pattern": "(a)\\1"}, "RE2"),
        ({"$ref": "#"}, "recurse forever"),
    ],
    ids=["not-object", "invalid", "remote-ref", "backreference", "ref-cycle"],
)
def test_unusable_schema_is_a_400_naming_the_schema_param(schema: Any, words: str) -> None:
    with pytest.raises(GatewayError) as info:
        fmt(schema)
    assert info.value.kind is ErrorKind.INVALID_REQUEST
    assert info.value.param == SCHEMA_PARAM
    assert words in info.value.message


@pytest.mark.parametrize(
    ("made", "text", "wanted"),
    [
        (fmt(), '{"name": 1}', "the requested schema (output_config.format)"),
        (fmt(name="person"), "prose", "the requested schema 'person' (output_config.format)"),
        (json_object_format(param="text.format"), "[]", "a JSON object (text.format)"),
    ],
    ids=["unnamed", "named", "object"],
)
def test_the_failure_names_the_dialects_param(made: Any, text: str, wanted: str) -> None:
    with pytest.raises(GatewayError) as info:
        check_content(made, text)
    err = info.value
    assert err.kind is ErrorKind.UPSTREAM_ERROR and err.code == "response_format_failed"
    assert err.param == made.param
    assert f"The model's answer was not valid JSON for {wanted}: " in err.message


@pytest.mark.parametrize(
    ("made", "expected"),
    [
        (fmt(), "against the JSON Schema below and nothing else."),
        (fmt(name="p", description="A p."), 'the JSON Schema below ("p": A p.) and nothing'),
        (json_object_format(param=PARAM), "Answer with one JSON object and nothing else."),
    ],
    ids=["unnamed", "named", "object"],
)
def test_instruction(made: Any, expected: str) -> None:
    assert expected in instruction(made)


def test_stream_check_strips_a_fence_and_checks_at_the_end() -> None:
    checker = StreamJSONCheck(fmt())
    events: list[Event] = [TextDelta('```json\n{"name": '), TextDelta('"Ada"}\n```')]
    out = [e for ev in [*events, MessageStop("end_turn")] for e in checker.feed(ev)]
    assert "".join(e.text for e in out if isinstance(e, TextDelta)) == '{"name": "Ada"}'
    with pytest.raises(GatewayError):
        bad = StreamJSONCheck(fmt())
        for ev in [TextDelta("Sure, here it is"), MessageStop("end_turn")]:
            bad.feed(ev)


@pytest.mark.parametrize(
    ("name", "ok"), [("a-b_9", True), ("", False), ("x" * 65, False), (3, False), ("a b", False)]
)
def test_require_name(name: Any, ok: bool) -> None:
    if ok:
        assert require_name(name, "text.format.name") == name
        return
    with pytest.raises(GatewayError) as info:
        require_name(name, "text.format.name")
    assert info.value.param == "text.format.name"
