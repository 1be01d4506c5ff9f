"""Anthropic structured outputs and `thread` (frontends/anthropic/output_format.py): the parse of
`output_config.format` / `output_format` into a JSONFormat, its 400s, and the thread refusal's
body (what the anthropic SDK reads before resending the whole conversation)."""

from __future__ import annotations

from typing import Any

import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.frontends.anthropic.error_json import error_response, stream_error_body
from ki2api.frontends.anthropic.output_format import (
    parse_output_format,
    thread_unsupported,
    wants_thread,
)
from ki2api.frontends.json_output import check_content

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
FMT = {"type": "json_schema", "schema": SCHEMA}


@pytest.mark.parametrize(
    ("config", "legacy", "param"),
    [
        (None, None, None),
        ({}, None, None),
        ({"effort": "high"}, None, None),
        ({"format": None}, None, None),
        ({"format": FMT}, None, "output_config.format"),
        ({"effort": "low", "format": FMT}, None, "output_config.format"),
        (None, FMT, "output_format"),
        ({"format": None}, FMT, "output_format"),
    ],
    ids=["none", "empty", "effort-only", "format-null", "config", "config-and-effort",
         "legacy", "legacy-beside-null-format"],
)  # fmt: skip
def test_which_format_is_asked_for(config: Any, legacy: Any, param: str | None) -> None:
    fmt = parse_output_format(config, legacy)
    if param is None:
        assert fmt is None
        return
    assert fmt is not None and fmt.kind == "json_schema" and fmt.name is None
    assert fmt.param == param and fmt.schema == SCHEMA
    assert check_content(fmt, '```json\n{"a": 1}\n```') == '{"a": 1}'
    with pytest.raises(GatewayError) as info:
        check_content(fmt, '{"a": "1"}')
    assert info.value.kind is ErrorKind.UPSTREAM_ERROR and info.value.param == param
    assert f"for the requested schema ({param}): at $.a:" in info.value.message


@pytest.mark.parametrize(
    ("config", "legacy", "param", "words"),
    [
        ({"format": "json"}, None, "output_config.format", "Input should be an object"),
        ({"format": {"type": "json_object"}}, None, "output_config.format.type", "'json_schema'"),
        ({"format": {"type": "json_schema"}}, None, "output_config.format.schema", "required"),
        ({"format": {"type": "json_schema", "schema": []}}, None, "output_config.format.schema",
         "expected an object"),
        ({"format": {"type": "json_schema", "schema": {"type": "nope"}}}, None,
         "output_config.format.schema", "not a valid JSON Schema"),
        (None, {"type": "json_schema", "schema": {"$ref": "#"}}, "output_format.schema",
         "recurse forever"),
        (None, {"type": "json_schema", "schema": {"$ref": "http://x/s"}}, "output_format.schema",
         "only local references"),
        ({"format": FMT}, FMT, "output_format", "not both"),
    ],
    ids=["not-object", "wrong-type", "no-schema", "schema-not-object", "invalid-schema",
         "ref-cycle", "remote-ref", "both"],
)  # fmt: skip
def test_an_unusable_format_is_a_400_naming_the_param(
    config: Any, legacy: Any, param: str, words: str
) -> None:
    with pytest.raises(GatewayError) as info:
        parse_output_format(config, legacy)
    assert info.value.kind is ErrorKind.INVALID_REQUEST
    assert info.value.param == param
    assert param in info.value.message and words in info.value.message


@pytest.mark.parametrize(
    ("thread", "wanted"),
    [
        (None, False),
        (False, False),
        ({"type": "create"}, True),
        ({"type": "continue", "previous_message_id": "msg_1"}, True),
        ({}, True),
        ("yes", True),
    ],
)
def test_wants_thread(thread: Any, wanted: bool) -> None:
    assert wants_thread(thread) is wanted


def test_the_thread_refusal_carries_the_details_the_sdk_checks() -> None:
    status, body, _ = error_response(thread_unsupported(), "req_1")
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["details"] == {
        "error_code": "thread_unsupported_request",
        "unsupported": ["thread"],
    }


def test_a_failed_answer_carries_its_code_in_details() -> None:
    fmt = parse_output_format({"format": FMT}, None)
    with pytest.raises(GatewayError) as info:
        check_content(fmt, "prose")
    status, body, _ = error_response(info.value, "req_1")
    assert status == 502 and body["error"]["type"] == "api_error"
    assert body["error"]["details"] == {"error_code": "response_format_failed"}
    assert stream_error_body(info.value)["error"]["details"] == body["error"]["details"]


@pytest.mark.parametrize(
    "err",
    [
        GatewayError(ErrorKind.INVALID_REQUEST, "bad", param="thread"),
        GatewayError(ErrorKind.UPSTREAM_ERROR, "x", code="thread_unsupported_request"),
        GatewayError(ErrorKind.INVALID_REQUEST, "x", code="response_format_failed"),
        GatewayError(ErrorKind.UPSTREAM_ERROR, "x"),
    ],
    ids=["other-400", "code-on-another-kind", "format-code-on-a-400", "plain-502"],
)
def test_other_errors_carry_no_details(err: GatewayError) -> None:
    assert "details" not in stream_error_body(err)["error"]
