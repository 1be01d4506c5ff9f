"""The Responses API translators: request -> Conversation (a table of cases and of refusals),
and core events -> the response object and its typed SSE events."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.events import (
    Event,
    MessageStop,
    TextDelta,
    ThinkingDelta,
    ToolArgsDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from ki2api.core.messages import TextPart, ThinkingPart, ToolResultPart, ToolUsePart
from ki2api.core.models import ModelInfo, default_catalogue
from ki2api.frontends.openai.responses_from_core import ResponseBuilder, ResponsesEncoder
from ki2api.frontends.openai.responses_to_core import text_format, to_conversation
from ki2api.frontends.openai.responses_wire import dump_items, parse_items, parse_responses_request


def model() -> ModelInfo:
    info = default_catalogue().resolve("claude-sonnet-4")
    assert info is not None
    return info


def convert(body: dict[str, Any], prior: list[Any] | None = None) -> Any:
    req = parse_responses_request(json.dumps({"model": "claude-sonnet-4", **body}).encode())
    return to_conversation(req, model(), prior=parse_items(prior or []))


def shape(conv: Any) -> list[tuple[str, list[str]]]:
    return [(m.role, [type(p).__name__ for p in m.parts]) for m in conv.messages]


CASES: list[
    tuple[str, dict[str, Any], list[Any] | None, list[tuple[str, list[str]]], tuple[str, ...]]
] = [
    ("string input", {"input": "hi"}, None, [("user", ["TextPart"])], ()),
    (
        "instructions then developer",
        {
            "instructions": "I",
            "input": [{"role": "developer", "content": "D"}, {"role": "user", "content": "u"}],
        },
        None,
        [("user", ["TextPart"])],
        ("I", "D"),
    ),
    (
        "reasoning, message and calls make one assistant turn, thinking first",
        {
            "input": [
                {"role": "user", "content": "u"},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "t"}]},
                {"type": "function_call_output", "call_id": "c1", "output": "r"},
            ]
        },
        None,
        [
            ("user", ["TextPart"]),
            ("assistant", ["ThinkingPart", "ToolUsePart"]),
            ("user", ["ToolResultPart"]),
        ],
        (),
    ),
    (
        "prior items come first",
        {"input": [{"role": "user", "content": "second"}]},
        [
            {"role": "user", "content": "first"},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "a"}],
            },
        ],
        [("user", ["TextPart"]), ("assistant", ["TextPart"]), ("user", ["TextPart"])],
        (),
    ),
    (
        "a lone reasoning item is dropped",
        {"input": [{"type": "reasoning", "summary": []}, {"role": "user", "content": "u"}]},
        None,
        [("user", ["TextPart"])],
        (),
    ),
]


@pytest.mark.parametrize(
    ("name", "body", "prior", "expected", "system"), CASES, ids=[c[0] for c in CASES]
)
def test_to_conversation(
    name: str, body: dict[str, Any], prior: list[Any] | None, expected: Any, system: tuple[str, ...]
) -> None:
    conv = convert(body, prior)
    assert shape(conv) == expected
    assert conv.system == system


def test_parts_carry_their_values() -> None:
    conv = convert(
        {
            "input": [
                {"role": "user", "content": "u"},
                {
                    "type": "reasoning",
                    "summary": [{"type": "summary_text", "text": "t"}],
                    "encrypted_content": "sig",
                },
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a": 1}'},
                {"type": "function_call_output", "call_id": "c1", "output": "r"},
            ],
            "tools": [{"type": "function", "name": "f"}],
            "tool_choice": {"type": "function", "name": "f"},
            "reasoning": {"effort": "low"},
            "max_output_tokens": 50,
        }
    )
    assert conv.messages[1].parts == (
        ThinkingPart("t", signature="sig"),
        ToolUsePart("c1", "f", {"a": 1}),
    )
    assert conv.messages[2].parts == (ToolResultPart("c1", (TextPart("r"),)),)
    assert conv.tools[0].input_schema == {"type": "object", "properties": {}}
    assert (conv.tool_choice.mode, conv.tool_choice.name) == ("tool", "f")
    assert conv.params.max_tokens == 50
    assert conv.params.thinking is not None and conv.params.thinking.budget_tokens == 4000


REFUSALS: list[tuple[dict[str, Any], str]] = [
    ({"input": "x", "tools": [{"type": "file_search"}]}, "tools.0.type"),
    ({"input": "x", "tools": [{"type": "function", "name": "f"}, {"type": "mcp"}]}, "tools.1.type"),
    ({"input": "x", "tools": [{"type": "function"}]}, "tools.0.name"),
    ({"input": "x", "tool_choice": "required"}, "tool_choice"),
    ({"input": "x", "tool_choice": {"type": "function", "name": "g"}}, "tool_choice"),
    ({"input": "x", "tool_choice": {"type": "image_generation"}}, "tool_choice.type"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input.0.type"),
    (
        {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
        "input.0.content.0",
    ),
    (
        {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
        "input.0.content.0.file_id",
    ),
    (
        {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[]"}]},
        "input.0.arguments",
    ),
    ({"input": "x", "background": True}, "background"),
    ({"input": "x", "conversation": "conv_1"}, "conversation"),
]


@pytest.mark.parametrize(("body", "param"), REFUSALS)
def test_refusals_name_their_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as info:
        convert(body)
    assert info.value.kind is ErrorKind.INVALID_REQUEST and info.value.param == param


@pytest.mark.parametrize(
    ("fmt", "param"),
    [
        ({"type": "json_schema", "schema": {}}, "text.format.name"),
        ({"type": "json_schema", "name": "n"}, "text.format.schema"),
        ({"type": "json_schema", "name": "n", "schema": {"type": 5}}, "text.format.schema"),
    ],
)
def test_text_format_refusals(fmt: dict[str, Any], param: str) -> None:
    req = parse_responses_request(json.dumps({"model": "m", "text": {"format": fmt}}).encode())
    with pytest.raises(GatewayError) as info:
        text_format(req)
    assert info.value.param == param


def test_dump_items_round_trips() -> None:
    req = parse_responses_request(b'{"model": "m", "input": [{"role": "user", "content": "x"}]}')
    assert parse_items(dump_items(req)) == list(req.input or [])
    assert dump_items(parse_responses_request(b'{"model": "m", "input": "y"}')) == [
        {"type": "message", "role": "user", "content": "y"}
    ]


ENVELOPE = {"id": "resp_1", "object": "response", "model": "m"}


def run(events: list[Event]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    builder = ResponseBuilder(dict(ENVELOPE), input_tokens=7)
    out = builder.start()
    for event in events:
        out.extend(builder.feed(event))
    return out, builder.final


def test_event_sequence_of_thinking_text_and_a_call() -> None:
    out, final = run(
        [
            ThinkingDelta("t"),
            ThinkingDelta("", signature="sig"),
            TextDelta("a"),
            TextDelta("b"),
            ToolCallStart(0, "c1", "f"),
            ToolArgsDelta(0, '{"x":'),
            ToolArgsDelta(0, "1}"),
            ToolCallEnd(0),
            Usage(10, 5, cache_read_input_tokens=2),
            MessageStop("tool_use"),
        ]
    )
    assert [e["type"] for e in out] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    assert final is not None and final["status"] == "completed"
    reasoning, message, call = final["output"]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "t"}]
    assert reasoning["encrypted_content"] == "sig"
    assert message["content"][0]["text"] == "ab"
    assert (call["call_id"], call["arguments"], call["status"]) == ("c1", '{"x":1}', "completed")
    assert final["usage"]["input_tokens"] == 12
    assert final["usage"]["input_tokens_details"]["cached_tokens"] == 2
    assert final["usage"]["total_tokens"] == 17


def test_max_tokens_is_incomplete() -> None:
    out, final = run([TextDelta("a"), MessageStop("max_tokens")])
    assert out[-1]["type"] == "response.incomplete"
    assert final is not None and final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][0]["status"] == "incomplete"


def test_an_unclosed_call_is_closed_at_the_stop() -> None:
    out, final = run([ToolCallStart(0, "c1", "f"), ToolArgsDelta(0, "{}"), MessageStop("tool_use")])
    assert [e["type"] for e in out][-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]


def test_protocol_errors() -> None:
    with pytest.raises(GatewayError):
        run([ToolArgsDelta(3, "{}")])
    with pytest.raises(GatewayError):
        run([ToolCallStart(0, "c", "f"), ToolCallStart(0, "c", "f")])


def test_encoder_failure_is_error_then_failed_and_nothing_after() -> None:
    encoder = ResponsesEncoder(ResponseBuilder(dict(ENVELOPE), input_tokens=1))
    first = encoder.feed(TextDelta("partial"))
    failed = encoder.error(GatewayError(ErrorKind.UPSTREAM_PROTOCOL, "cut"))
    assert encoder.finished
    assert (
        encoder.feed(MessageStop("end_turn")) == b""
        and encoder.error(GatewayError(ErrorKind.INTERNAL, "x")) == b""
    )
    names = [
        line[7:] for line in (first + failed).decode().splitlines() if line.startswith("event: ")
    ]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-2:] == ["error", "response.failed"] and "response.completed" not in names
    last = json.loads((first + failed).decode().strip().splitlines()[-1][6:])
    assert last["response"]["status"] == "failed"
    assert last["response"]["error"]["code"] == "server_error"
    assert last["response"]["output"][0]["status"] == "incomplete"
