"""OpenAI's `response_format` (`text`, `json_object`, `json_schema`) -> the neutral `JSONFormat`
of `frontends/json_output.py`, which does the work (instruction, fence stripping, the check).

A missing `json_schema`, a bad name and an unusable schema are a 400 with `param`
(`response_format.json_schema…`); a failed answer is the 502 `response_format_failed` with
`param: "response_format"`. `strict` is accepted and changes nothing, since no schema can be
enforced while the model writes.
"""

from __future__ import annotations

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.frontends import json_output
from ki2api.frontends.json_output import JSONFormat
from ki2api.frontends.openai.wire import ResponseFormat

__all__ = ["PARAM", "instruction", "parse_format"]

PARAM = "response_format"
_SPEC = "response_format.json_schema"


def parse_format(rf: ResponseFormat | None) -> JSONFormat | None:
    """The JSON format asked for (None: plain text); an unusable one is a 400 with `param`."""
    if rf is None or rf.type == "text":
        return None
    if rf.type == "json_object":
        return json_output.json_object_format(param=PARAM)
    spec = rf.json_schema
    if spec is None:
        raise GatewayError(
            ErrorKind.INVALID_REQUEST, f"Missing required parameter: '{_SPEC}'.", param=_SPEC
        )
    name = json_output.require_name(spec.get("name"), f"{_SPEC}.name")
    return json_output.json_schema_format(
        spec.get("schema"),
        schema_param=f"{_SPEC}.schema",
        param=PARAM,
        name=name,
        description=spec.get("description"),
    )


def instruction(rf: ResponseFormat | None) -> str | None:
    """The text to append to the system texts, or None when the answer is free text."""
    fmt = parse_format(rf)
    return None if fmt is None else json_output.instruction(fmt)
