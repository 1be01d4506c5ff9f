"""kiro.tools: names, descriptions, schemas and tool_choice (tables)."""

from __future__ import annotations

import hashlib
import random
import string
from types import MappingProxyType
from typing import Any

import pytest

from ki2api.core.messages import ToolChoice, ToolSpec
from ki2api.kiro.request.tools import (
    INSTRUCTIONS,
    MAX_DESCRIPTION,
    MAX_TOOL_NAME,
    PLACEHOLDER_TOOL_DESCRIPTION,
    TOOL_DOCS_HEADING,
    assign_tool_names,
    choice_instruction,
    fit_description,
    is_kiro_tool_name,
    normalize_schema,
    plan_tools,
    shorten_tool_name,
)

OBJ: dict[str, Any] = {"type": "object", "properties": {}}


def sha10(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("get_weather", True),
        ("a", True),
        ("A-b_9", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("9lives", False),
        ("_private", False),
        ("-dash", False),
        ("has.dot", False),
        ("has space", False),
        ("naïve", False),
        ("", False),
    ],
    ids=["plain", "one", "mixed", "64", "65", "digit-first", "underscore-first", "dash-first",
         "dot", "space", "non-ascii", "empty"],
)  # fmt: skip
def test_is_kiro_tool_name(name: str, valid: bool) -> None:
    assert is_kiro_tool_name(name) is valid


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("x" * 70, "x" * 53 + "_" + sha10("x" * 70)),
        ("has.dot", "has_dot_" + sha10("has.dot")),
        ("9lives", "t_9lives_" + sha10("9lives")),
        ("_p", "t__p_" + sha10("_p")),
        ("naïve", "na_ve_" + sha10("naïve")),
        ("", "t__" + sha10("")),
    ],
    ids=["long", "dot", "digit-first", "underscore-first", "non-ascii", "empty"],
)
def test_shorten_tool_name(name: str, expected: str) -> None:
    short = shorten_tool_name(name)
    assert short == expected
    assert is_kiro_tool_name(short)


def test_shortened_names_are_valid_and_at_most_64() -> None:
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "_-.:/ é中"
    for _ in range(500):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
        for attempt in (0, 1, 5):
            short = shorten_tool_name(name, attempt)
            assert is_kiro_tool_name(short) and len(short) <= MAX_TOOL_NAME, name


def test_assign_keeps_valid_names_and_shortens_the_rest() -> None:
    long = "mcp__github__" + "create_or_update_file_in_repository_" * 2
    names = assign_tool_names(["read", long, "a.b", "read"])
    assert names == {"read": "read", long: shorten_tool_name(long), "a.b": shorten_tool_name("a.b")}


def test_assign_is_order_independent_and_stable() -> None:
    names = ["z" * 80, "a.b", "ok", "y" * 65]
    assert assign_tool_names(names) == assign_tool_names(reversed(names))
    assert assign_tool_names(names)["z" * 80] == assign_tool_names(["z" * 80])["z" * 80]


def test_a_valid_name_equal_to_a_short_name_keeps_it_and_the_other_moves_on() -> None:
    clash = shorten_tool_name("a.b")  # a client may really have a tool named like this
    names = assign_tool_names(["a.b", clash])
    assert names[clash] == clash
    assert names["a.b"] == shorten_tool_name("a.b", 1)
    assert len(set(names.values())) == 2


def test_many_similar_long_names_never_collide() -> None:
    prefix = "p" * 60
    originals = [f"{prefix}{i}" for i in range(300)]
    shorts = assign_tool_names(originals)
    assert len(set(shorts.values())) == 300
    assert all(is_kiro_tool_name(s) for s in shorts.values())


# -- descriptions -----------------------------------------------------------------------------


def test_blank_description_gets_a_default() -> None:
    assert fit_description("f", "  \n") == ("Tool: f", None)


def test_description_at_the_limit_is_kept() -> None:
    text = "d" * MAX_DESCRIPTION
    assert fit_description("f", text) == (text, None)


def test_over_long_description_moves_and_leaves_a_reference() -> None:
    text = "Reads files. " + "x" * MAX_DESCRIPTION
    short, moved = fit_description("read_file", text)
    assert moved == text
    assert short.startswith("Reads files.")
    assert "read_file" in short and "Tool documentation" in short
    assert len(short) < 500


# -- schemas ----------------------------------------------------------------------------------

SCHEMAS: list[tuple[str, Any, dict[str, Any]]] = [
    ("none", None, OBJ),
    ("empty", {}, OBJ),
    ("not-a-mapping", [1, 2], OBJ),
    ("string-type", {"type": "string"}, OBJ),
    ("array-type", {"type": "array", "items": {"type": "string"}}, OBJ),
    (
        "missing-type",
        {"properties": {"a": {"type": "string"}}},
        {"type": "object", "properties": {"a": {"type": "string"}}},
    ),
    ("type-list", {"type": ["object", "null"], "properties": {}}, OBJ),
    ("missing-properties", {"type": "object"}, OBJ),
    ("properties-not-a-dict", {"type": "object", "properties": []}, OBJ),
    (
        "drops-$schema",
        {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "properties": {}},
        OBJ,
    ),
    ("drops-empty-required", {"type": "object", "properties": {}, "required": []}, OBJ),
    (
        "keeps-the-rest",
        {
            "type": "object",
            "properties": {"a": {"type": "integer", "minimum": 1}},
            "required": ["a"],
            "additionalProperties": False,
            "description": "d",
        },
        {
            "type": "object",
            "properties": {"a": {"type": "integer", "minimum": 1}},
            "required": ["a"],
            "additionalProperties": False,
            "description": "d",
        },
    ),
    (
        "nested-cleaned",
        {
            "type": "object",
            "properties": {
                "o": {
                    "type": "object",
                    "properties": {"$schema": {"type": "string"}},
                    "required": [],
                },
                "l": {"type": "array", "items": {"$schema": "x", "type": "object", "required": []}},
                "u": {"anyOf": [{"type": "string", "$schema": "x"}, {"type": "null"}]},
            },
            "$defs": {"D": {"type": "object", "required": [], "properties": {}}},
        },
        {
            "type": "object",
            "properties": {
                "o": {"type": "object", "properties": {"$schema": {"type": "string"}}},
                "l": {"type": "array", "items": {"type": "object"}},
                "u": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
            "$defs": {"D": {"type": "object", "properties": {}}},
        },
    ),
    (
        "property-named-required-kept",
        {"type": "object", "properties": {"required": {"type": "boolean"}}},
        {"type": "object", "properties": {"required": {"type": "boolean"}}},
    ),
    (
        "read-only-mappings",
        MappingProxyType(
            {
                "type": "object",
                "properties": MappingProxyType({"a": MappingProxyType({"enum": ("x", "y")})}),
            }
        ),
        {"type": "object", "properties": {"a": {"enum": ["x", "y"]}}},
    ),
]


@pytest.mark.parametrize(
    ("schema", "expected"), [s[1:] for s in SCHEMAS], ids=[s[0] for s in SCHEMAS]
)
def test_normalize_schema(schema: Any, expected: dict[str, Any]) -> None:
    assert normalize_schema(schema) == expected


def test_normalize_schema_does_not_touch_its_input() -> None:
    schema = {"type": "object", "properties": {}, "required": [], "$schema": "x"}
    normalize_schema(schema)
    assert schema == {"type": "object", "properties": {}, "required": [], "$schema": "x"}


# -- tool_choice ------------------------------------------------------------------------------

CHOICES: list[tuple[str, ToolChoice, bool, str]] = [
    ("auto", ToolChoice(), True, ""),
    ("auto-single", ToolChoice(parallel=False), True, INSTRUCTIONS["single"]),
    ("none", ToolChoice("none"), False, INSTRUCTIONS["none"]),
    ("required", ToolChoice("required"), True, INSTRUCTIONS["required"]),
    (
        "required-single",
        ToolChoice("required", parallel=False),
        True,
        INSTRUCTIONS["required"] + " " + INSTRUCTIONS["single"],
    ),
    ("named", ToolChoice("tool", "f"), True, INSTRUCTIONS["tool"].format(name="kiro_f")),
    ("nothing-offered", ToolChoice("required", parallel=False), False, ""),
]


@pytest.mark.parametrize(
    ("choice", "offered", "expected"), [c[1:] for c in CHOICES], ids=[c[0] for c in CHOICES]
)
def test_choice_instruction(choice: ToolChoice, offered: bool, expected: str) -> None:
    assert choice_instruction(choice, "kiro_f", offered=offered) == expected


def test_instructions_do_not_look_like_an_emulator_call_command() -> None:
    # the emulator answers "call NAME" with a call of NAME: our own texts must not say that
    for text in INSTRUCTIONS.values():
        assert "call " not in text.lower().replace("tool call", "")


# -- the whole plan ---------------------------------------------------------------------------

LONG = "x" * 70
TOOLS = (
    ToolSpec("read", "Reads.", OBJ),
    ToolSpec(LONG, "Long name.", {"type": "object"}),
    ToolSpec("doc", "D" * (MAX_DESCRIPTION + 1), OBJ),
    ToolSpec("read", "Duplicate, ignored.", OBJ),
)


def spec_names(plan: Any) -> list[str]:
    return [s["toolSpecification"]["name"] for s in plan.specs]


def test_plan_auto() -> None:
    plan = plan_tools(TOOLS, ToolChoice(), ["gone", LONG])
    short = shorten_tool_name(LONG)
    assert spec_names(plan) == ["read", short, "doc", "gone"]
    assert plan.names == {"read": "read", LONG: short, "doc": "doc", "gone": "gone"}
    assert plan.offered == ("read", LONG, "doc")
    assert plan.instruction == ""
    assert plan.documentation.startswith(TOOL_DOCS_HEADING)
    assert "## doc\n\n" + "D" * (MAX_DESCRIPTION + 1) in plan.documentation
    assert plan.specs[3]["toolSpecification"]["description"] == PLACEHOLDER_TOOL_DESCRIPTION


def test_plan_none_offers_only_placeholders_for_history() -> None:
    plan = plan_tools(TOOLS, ToolChoice("none"), [LONG])
    assert spec_names(plan) == [shorten_tool_name(LONG)]
    assert plan.specs[0]["toolSpecification"]["description"] == PLACEHOLDER_TOOL_DESCRIPTION
    assert plan.offered == ()
    assert plan.instruction == INSTRUCTIONS["none"]
    assert plan.documentation == ""


def test_plan_none_without_history_sends_no_tools() -> None:
    plan = plan_tools(TOOLS, ToolChoice("none"), [])
    assert plan.specs == [] and plan.instruction == INSTRUCTIONS["none"]


def test_plan_named_uses_the_kiro_name() -> None:
    plan = plan_tools(TOOLS, ToolChoice("tool", LONG), [])
    assert plan.instruction == INSTRUCTIONS["tool"].format(name=shorten_tool_name(LONG))


def test_plan_without_any_tools_adds_nothing() -> None:
    plan = plan_tools((), ToolChoice("none", parallel=False), [])
    assert (plan.specs, plan.instruction, plan.documentation) == ([], "", "")
