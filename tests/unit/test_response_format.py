"""response_format: OpenAI's parse into the neutral JSONFormat (frontends/json_output.py), the
instruction, fence stripping, JSON and schema checks, stream and not, with OpenAI's params and
wording."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.events import (
    Event,
    MessageStop,
    StopReason,
    TextDelta,
    ThinkingDelta,
    ToolArgsDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from ki2api.frontends import json_output
from ki2api.frontends.json_output import FenceStripper, StreamJSONCheck
from ki2api.frontends.openai.response_format import instruction, parse_format
from ki2api.frontends.openai.wire import ResponseFormat

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def rf(kind: str = "json_schema", **json_schema: Any) -> ResponseFormat:
    if kind != "json_schema":
        return ResponseFormat(type=kind)  # type: ignore[arg-type]
    return ResponseFormat(type="json_schema", json_schema=json_schema)


def check(fmt: ResponseFormat | None, text: str) -> str:
    return json_output.check_content(parse_format(fmt), text)


def stream_check(fmt: ResponseFormat | None) -> StreamJSONCheck:
    return StreamJSONCheck(parse_format(fmt))


OBJECT = rf("json_object")
SCHEMA = rf(name="person", schema=PERSON, strict=True)

# --- instruction and request checks ----------------------------------------------------------


def test_no_instruction_for_text_or_no_format() -> None:
    assert instruction(None) is None
    assert instruction(rf("text")) is None


def test_json_object_instruction() -> None:
    text = instruction(OBJECT)
    assert text is not None and "one JSON object" in text and "code fences" in text


def test_json_schema_instruction_carries_the_schema() -> None:
    text = instruction(rf(name="person", description="A person.", schema=PERSON))
    assert text is not None
    assert '"person": A person.' in text
    start = text.index("JSON Schema:\n") + len("JSON Schema:\n")
    assert json.loads(text[start:]) == PERSON


@pytest.mark.parametrize(
    ("fmt", "param", "words"),
    [
        (ResponseFormat(type="json_schema"), "response_format.json_schema", "Missing required"),
        (rf(schema=PERSON), "response_format.json_schema.name", "name"),
        (rf(name="has space", schema=PERSON), "response_format.json_schema.name", "letters"),
        (rf(name="x" * 65), "response_format.json_schema.name", "64"),
        (rf(name="p", schema=[1]), "response_format.json_schema.schema", "expected an object"),
        (rf(name="p", schema={"type": 5}), "response_format.json_schema.schema", "valid JSON"),
        (
            rf(name="p", schema={"properties": {"a": {"$ref": "https://example.com/s.json"}}}),
            "response_format.json_schema.schema",
            "only local references",
        ),
    ],
    ids=["no-json-schema", "no-name", "bad-name", "long-name", "schema-not-object",
         "invalid-schema", "remote-ref"],
)  # fmt: skip
def test_unusable_formats_are_a_400(fmt: ResponseFormat, param: str, words: str) -> None:
    with pytest.raises(GatewayError) as info:
        instruction(fmt)
    assert info.value.kind is ErrorKind.INVALID_REQUEST
    assert info.value.param == param
    assert words in info.value.message


def test_local_refs_are_fine() -> None:
    schema = {
        "$defs": {"n": {"type": "integer"}},
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/n"}},
    }
    assert check(rf(name="p", schema=schema), '{"a": 1}') == '{"a": 1}'
    with pytest.raises(GatewayError):
        check(rf(name="p", schema=schema), '{"a": "1"}')


# --- check (parse_format, then json_output.check_content) ----------------------------------

VALID = '{"name": "Ada", "age": 36}'

CONTENT_CASES: list[tuple[str, ResponseFormat, str, str | None]] = [
    # id, format, model text, cleaned text (None: the 502 error)
    ("plain-object", OBJECT, '{"a": 1}', '{"a": 1}'),
    ("surrounding-space", OBJECT, ' \n{"a": 1}\n', ' \n{"a": 1}\n'),
    ("json-fence", OBJECT, '```json\n{"a": 1}\n```', '{"a": 1}'),
    ("bare-fence", OBJECT, '```\n{"a": 1}\n```\n', '{"a": 1}'),
    ("fence-after-space", OBJECT, '\n  ```JSON\r\n{"a": 1}\r\n```', '{"a": 1}'),
    ("unclosed-fence", OBJECT, '```json\n{"a": 1}', '{"a": 1}'),
    ("backticks-inside-string", OBJECT, '```json\n{"c": "``` x ```"}\n```', '{"c": "``` x ```"}'),
    ("prose-after-fence", OBJECT, '```json\n{"a": 1}\n```\nHope this helps!', None),
    ("prose-before", OBJECT, 'Sure! {"a": 1}', None),
    ("not-json", OBJECT, "{'a': 1}", None),
    ("truncated", OBJECT, '{"a": [1, 2', None),
    ("nan", OBJECT, '{"a": NaN}', None),
    ("empty", OBJECT, "", None),
    ("only-a-fence", OBJECT, "```json\n```", None),
    ("array-not-object", OBJECT, "[1, 2]", None),
    ("string-not-object", OBJECT, '"hi"', None),
    ("schema-valid", SCHEMA, VALID, VALID),
    ("schema-valid-fenced", SCHEMA, f"```json\n{VALID}\n```", VALID),
    ("schema-wrong-type", SCHEMA, '{"name": "Ada", "age": "36"}', None),
    ("schema-missing-required", SCHEMA, '{"name": "Ada"}', None),
    ("schema-extra-property", SCHEMA, '{"name": "Ada", "age": 1, "x": 0}', None),
    ("schema-minimum", SCHEMA, '{"name": "Ada", "age": -1}', None),
    ("no-schema-means-object", rf(name="free"), '{"z": []}', '{"z": []}'),
    ("no-schema-array", rf(name="free"), "[]", None),
    ("text-untouched", rf("text"), "```json\nnot json\n```", "```json\nnot json\n```"),
]


@pytest.mark.parametrize(
    ("fmt", "text", "cleaned"),
    [c[1:] for c in CONTENT_CASES],
    ids=[c[0] for c in CONTENT_CASES],
)
def test_check_content(fmt: ResponseFormat, text: str, cleaned: str | None) -> None:
    if cleaned is not None:
        assert check(fmt, text) == cleaned
        return
    with pytest.raises(GatewayError) as info:
        check(fmt, text)
    err = info.value
    assert err.kind is ErrorKind.UPSTREAM_ERROR
    assert err.code == "response_format_failed" and err.param == "response_format"
    assert err.message.startswith("The model's answer was not valid JSON for ")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"name": "Ada", "age": "36"}', "at $.age: '36' is not of type 'integer'"),
        ('{"name": "Ada"}', "'age' is a required property"),
        ("[1]", "is not of type 'object'"),
        ("{", "it does not parse"),
    ],
    ids=["type", "required", "root", "parse"],
)
def test_the_error_says_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(GatewayError) as info:
        check(SCHEMA, text)
    assert words in info.value.message
    assert "the requested schema 'person'" in info.value.message


def test_json_object_error_names_the_kind() -> None:
    with pytest.raises(GatewayError) as info:
        check(OBJECT, "[1, 2]")
    assert "it is an array, not an object" in info.value.message


# --- streaming -------------------------------------------------------------------------------


def run(checker: StreamJSONCheck, events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for ev in events:
        out.extend(checker.feed(ev))
    return out


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.mark.parametrize(
    ("fmt", "text", "cleaned"),
    [c[1:] for c in CONTENT_CASES],
    ids=[c[0] for c in CONTENT_CASES],
)
def test_streaming_agrees_with_check_content_for_every_split(
    fmt: ResponseFormat, text: str, cleaned: str | None
) -> None:
    for split in range(len(text) + 1):
        events: list[Event] = [TextDelta(text[:split]), TextDelta(text[split:])]
        checker = stream_check(fmt)
        if cleaned is None:
            with pytest.raises(GatewayError) as info:
                run(checker, [*events, MessageStop("end_turn")])
            assert info.value.code == "response_format_failed"
        else:
            out = run(checker, [*events, MessageStop("end_turn")])
            assert text_of(out) == cleaned, split
            assert out[-1] == MessageStop("end_turn")


@pytest.mark.parametrize(
    ("chunks", "first_out"),
    [
        (["```json\n", '{"a"'], ["", '{"a"']),
        (["``", "`json\n{", "}"], ["", "{", "}"]),
        (['{"a": 1', "}"], ['{"a": 1', "}"]),
        (["```json\n{}\n", "```"], ["{}", ""]),
    ],
    ids=["fence-then-json", "fence-split", "plain-passes-at-once", "closing-held"],
)
def test_fence_stripper_holds_back_only_what_could_be_a_fence(
    chunks: list[str], first_out: list[str]
) -> None:
    stripper = FenceStripper()
    assert [stripper.feed(c) for c in chunks] == first_out


@pytest.mark.parametrize(
    ("reason", "events"),
    [
        ("max_tokens", [TextDelta('{"a": [1, 2')]),
        ("stop_sequence", [TextDelta("{")]),
        ("end_turn", [ToolCallStart(0, "c", "f"), ToolArgsDelta(0, "{}"), ToolCallEnd(0)]),
        ("tool_use", [TextDelta("I will call f."), ToolCallStart(0, "c", "f"), ToolCallEnd(0)]),
    ],
    ids=["length", "stop-string", "tool-calls", "tool-use-with-text"],
)
def test_answers_cut_short_or_calling_tools_are_not_checked(
    reason: StopReason, events: list[Event]
) -> None:
    out = run(stream_check(OBJECT), [*events, MessageStop(reason)])
    assert out[-1] == MessageStop(reason)


def test_other_events_pass_through_unchanged() -> None:
    usage = Usage(3, 4)
    events: list[Event] = [ThinkingDelta("plan", "sig"), TextDelta('{"a": 1}'), usage]
    out = run(stream_check(SCHEMA.model_copy(update={"json_schema": {"name": "o"}})), events)
    assert out == events


def test_without_a_json_format_the_filter_passes_the_same_objects() -> None:
    checker = stream_check(None)
    assert not checker.active
    ev = TextDelta("```json\nnope")
    assert checker.feed(ev)[0] is ev
    assert checker.feed(MessageStop("end_turn")) == [MessageStop("end_turn")]


def test_parse_format_kinds() -> None:
    assert parse_format(None) is None
    fmt = parse_format(SCHEMA)
    assert fmt is not None and fmt.kind == "json_schema" and fmt.name == "person"
    obj = parse_format(OBJECT)
    assert obj is not None and obj.kind == "json_object" and obj.validator is None
