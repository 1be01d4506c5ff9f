"""Pure parts of the emulator's reply planning: directives, text splitting, schema inputs."""

from __future__ import annotations

from typing import Any

import pytest

from kiro_emulator.script import Directives, input_from_schema, parse_directives, split_text

# content -> (expected remaining text, expected non-default directive attributes)
DIRECTIVES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "none": ("plain text", "plain text", {}),
    "text-and-chunks": (
        'a<emu>{"text": "T", "chunks": 2}</emu>b',
        "ab",
        {"text": "T", "chunks": 2},
    ),
    "delays-in-seconds": (
        '<emu>{"first_delay_ms": 1500, "delay_ms": 20}</emu>',
        "",
        {"first_delay_s": 1.5, "delay_s": 0.02},
    ),
    "two-blocks-later-wins": (
        '<emu>{"chunks": 2}</emu>x<emu>{"chunks": 5, "events": 9}</emu>',
        "x",
        {"chunks": 5, "events": 9},
    ),
    "multiline-json": ('<emu>{\n "thinking": "hm"\n}</emu>', "", {"thinking": "hm"}),
    "invalid-json-kept": ("<emu>{chunks: 2}</emu>", "<emu>{chunks: 2}</emu>", {}),
    "array-kept": ("<emu>[1]</emu>", "<emu>[1]</emu>", {}),
    "bad-values-ignored": (
        '<emu>{"chunks": 0, "events": true, "split_bytes": "9", "repeat_text": [1], '
        '"metadata_usage": "yes", "error": {"status": 200}, "text": 5}</emu>',
        "",
        {},
    ),
    "unknown-key-ignored": ('<emu>{"colour": "red", "fragments": 7}</emu>', "", {"fragments": 7}),
    "tool-calls-need-names": (
        '<emu>{"tool_calls": [{"name": "a"}, {"input": {}}, 3]}</emu>',
        "",
        {"tool_calls": [{"name": "a"}]},
    ),
    "faults": (
        '<emu>{"truncate_after_events": 0, "split_bytes": 3, "context_usage": 99,'
        ' "error": {"status": 500, "body": {}}}</emu>',
        "",
        {
            "truncate_after_events": 0,
            "split_bytes": 3,
            "context_usage": 99.0,
            "error": {"status": 500, "body": {}},
        },
    ),
}


@pytest.mark.parametrize(("content", "rest", "changed"), DIRECTIVES.values(), ids=DIRECTIVES)
def test_parse_directives(content: str, rest: str, changed: dict[str, Any]) -> None:
    directives, remaining = parse_directives(content)
    assert remaining == rest
    defaults = Directives()
    got = {k: v for k, v in vars(directives).items() if v != getattr(defaults, k)}
    assert got == changed


@pytest.mark.parametrize(
    ("text", "n", "expected"),
    [
        ("", 8, []),
        ("abc", 1, ["abc"]),
        ("abcdefgh", 3, ["abc", "def", "gh"]),
        ("ab", 8, ["a", "b"]),
        ("é🎉日", 2, ["é🎉", "日"]),
    ],
    ids=["empty", "one", "uneven", "more-pieces-than-chars", "multibyte"],
)
def test_split_text(text: str, n: int, expected: list[str]) -> None:
    assert split_text(text, n) == expected


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "object", "properties": {}}, {}),
        ({"type": "string", "enum": ["b", "a"]}, "b"),
        ({"const": 3}, 3),
        ({"type": "integer"}, 1),
        ({"type": "boolean"}, True),
        ({"type": ["null", "number"]}, 1),
        ({"anyOf": [{"type": "boolean"}, {"type": "string"}]}, True),
        ({"type": "array", "items": {"type": "integer"}}, [1]),
        ({"properties": {"a": {"type": "object", "properties": {"b": {}}}}}, {"a": {"b": "x"}}),
        ("not a schema", "x"),
    ],
    ids=["empty", "enum", "const", "int", "bool", "nullable", "anyOf", "array", "nested", "junk"],
)
def test_input_from_schema(schema: Any, expected: Any) -> None:
    assert input_from_schema(schema) == expected
