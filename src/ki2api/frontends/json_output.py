"""A JSON answer for a model that cannot be constrained, neutral of dialect: OpenAI's
`response_format` (Chat Completions), `text.format` (Responses) and Anthropic's
`output_config.format` / `output_format` all become a `JSONFormat` here.

Kiro has no JSON mode, so the gateway (1) tells the model what to answer, (2) removes a markdown
code fence the model may wrap its JSON in, and (3) checks the answer when it is complete:

* `json_object_format()` / `json_schema_format(schema, ...)` build the format; the second checks
  the schema: not an object, not a valid JSON Schema, a non-local `$ref`, or one `schema_safety`
  refuses (too big, a pattern RE2 cannot run, a `$ref` cycle that never ends) is a 400 naming
  `schema_param`. `require_name()` is the 1-64 `[A-Za-z0-9_-]` rule for a format's name.
* `instruction(fmt)` is a text for the request's system texts.
* `StreamJSONCheck(fmt)` filters the response's events, streaming or not: answer text passes as
  it comes except a leading fence line and a closing fence, which are dropped. At a normal end
  (`MessageStop("end_turn")`, no tool calls) it parses and validates the whole answer and, if it
  does not satisfy the format, RAISES the `GatewayError` instead of passing the stop on: the
  streaming writer turns that into its in-stream error event (no finish, no stop event), the
  non-streaming path into a 502. Answers cut by `max_tokens` or a stop string, and answers that
  call tools, are not checked: their stop reason tells the client.
* `check_content(fmt, text)` is the same check for one whole text; it returns the cleaned text.

The answer's error is `UPSTREAM_ERROR` (HTTP 502) with `fmt.code` (`response_format_failed`)
and `fmt.param` (the request parameter that asked for the format): the request was fine, the
model's answer was not; the SDKs retry a 502, and a fresh answer often passes. Schemas are
checked with the `jsonschema` package (the dialect named by `$schema`, else the newest); nothing
can be enforced while the model writes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import jsonschema
from jsonschema.exceptions import SchemaError, best_match

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.events import Event, MessageStop, TextDelta, ToolCallStart
from ki2api.frontends.schema_safety import SchemaProblem, safe_validator

__all__ = [
    "FenceStripper",
    "JSONFormat",
    "StreamJSONCheck",
    "check_content",
    "instruction",
    "json_object_format",
    "json_schema_format",
    "require_name",
]

FAILED_CODE = "response_format_failed"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FENCE_OPEN = re.compile(r"^```[A-Za-z0-9_+.-]*[ \t]*\r?$")
_MAX_FENCE_HEADER = 24  # "```" + a language tag; longer first lines are not a fence
_DETAIL_CHARS = 300
_RULES = (
    "Your whole reply must parse as JSON: no text before or after it, no markdown code fences, "
    "no comments."
)


@dataclass(frozen=True, slots=True)
class JSONFormat:
    """A checked JSON answer format; `validator` is None when any object will do.

    `param` is the request parameter named by the error about a failed answer (OpenAI:
    "response_format", Responses: "text.format", Anthropic: "output_config.format");
    `code` is that error's code."""

    kind: Literal["json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    schema: dict[str, Any] | None = None
    validator: Any = None
    param: str = "response_format"
    code: str = FAILED_CODE


def json_object_format(*, param: str, name: str | None = None) -> JSONFormat:
    """Any JSON object."""
    return JSONFormat("json_object", name, param=param)


def json_schema_format(
    schema: Any,
    *,
    schema_param: str,
    param: str,
    name: str | None = None,
    description: str | None = None,
) -> JSONFormat:
    """A JSON value valid against `schema` (None: any object). An unusable schema is a 400
    with `param=schema_param` (where the schema sits, e.g. "output_config.format.schema")."""
    description = description if isinstance(description, str) and description else None
    if schema is None:
        return JSONFormat("json_schema", name, description, param=param)
    if not isinstance(schema, dict):
        raise _invalid(f"Invalid type for '{schema_param}': expected an object.", schema_param)
    validator = _validator(schema, schema_param)
    return JSONFormat("json_schema", name, description, schema, validator, param=param)


def require_name(value: Any, param: str) -> str:
    """A format's name (1 to 64 letters, digits, '_' or '-'), else a 400 naming `param`."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise _invalid(f"Invalid '{param}': expected 1 to 64 letters, digits, '_' or '-'.", param)
    return value


def _validator(schema: dict[str, Any], param: str) -> Any:
    ref = _remote_ref(schema)
    if ref is not None:
        raise _invalid(
            f"Invalid '{param}': only local references ('#...') are supported, not {ref!r}.",
            param,
        )
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
        return safe_validator(schema)
    except SchemaError as exc:
        detail = _short(exc.message)
        raise _invalid(f"Invalid '{param}': not a valid JSON Schema: {detail}", param) from None
    except SchemaProblem as exc:
        raise _invalid(f"Invalid '{param}': {exc}.", param) from None
    except RecursionError:
        raise _invalid(
            f"Invalid '{param}': it nests or refers to itself too deeply to check.", param
        ) from None


def _remote_ref(node: Any) -> str | None:
    """The first `$ref` that does not point inside the schema itself (never fetched)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            return ref
        children = list(node.values())
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        found = _remote_ref(child)
        if found is not None:
            return found
    return None


def instruction(fmt: JSONFormat) -> str:
    """The text to append to the system texts."""
    if fmt.schema is None:
        named = f" ({_label(fmt)})" if fmt.name else ""
        return f"Answer with one JSON object{named} and nothing else. {_RULES}"
    schema = json.dumps(fmt.schema, ensure_ascii=False, indent=2, sort_keys=False)
    label = f" ({_label(fmt)})" if fmt.name else ""
    return (
        f"Answer with one JSON value that validates against the JSON Schema below{label} and "
        f"nothing else. {_RULES} Use exactly the property names the schema defines and include "
        f"every required property.\n\nJSON Schema:\n{schema}"
    )


def _label(fmt: JSONFormat) -> str:
    return f'"{fmt.name}": {fmt.description}' if fmt.description else f'"{fmt.name}"'


def _failure(fmt: JSONFormat, detail: str) -> GatewayError:
    if fmt.kind == "json_object":
        wanted = "a JSON object"
    else:
        wanted = f"the requested schema {fmt.name!r}" if fmt.name else "the requested schema"
    return GatewayError(
        ErrorKind.UPSTREAM_ERROR,
        f"The model's answer was not valid JSON for {wanted} ({fmt.param}): {detail} "
        "Kiro cannot constrain the model's output; a retry may succeed.",
        param=fmt.param,
        code=fmt.code,
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _problem(fmt: JSONFormat, text: str) -> str | None:
    """Why `text` does not satisfy the format, or None when it does."""
    if not text.strip():
        return "the answer is empty."
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        return f"it does not parse ({_short(str(exc))})."
    except RecursionError:
        return "it is nested too deeply to check."
    if fmt.validator is None:
        if not isinstance(value, dict):
            return f"it is {_json_kind(value)}, not an object."
        return None
    try:
        error = best_match(fmt.validator.iter_errors(value))
    except RecursionError:
        return "it is nested too deeply to check against the schema."
    if error is None:
        return None
    return f"at {error.json_path}: {_short(error.message)}."


def _json_kind(value: Any) -> str:
    kinds = ((bool, "a boolean"), (int, "a number"), (float, "a number"), (str, "a string"))
    for kind, word in kinds:
        if isinstance(value, kind):
            return word
    return "an array" if isinstance(value, list) else "null"


def _short(text: str) -> str:
    text = text.rstrip(".")
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"


def _invalid(message: str, param: str) -> GatewayError:
    return GatewayError(ErrorKind.INVALID_REQUEST, message, param=param)


class FenceStripper:
    """Drops a markdown code fence around streamed text: the opening line as soon as it is
    complete, the closing fence at the end. Holds back only what could still be either."""

    def __init__(self) -> None:
        self._mode: Literal["start", "plain", "fenced"] = "start"
        self._held = ""

    def feed(self, text: str) -> str:
        if self._mode == "plain":
            return text
        self._held += text
        if self._mode == "start":
            return self._decide()
        return self._release_fenced()

    def finish(self) -> str:
        held, self._held = self._held, ""
        if self._mode == "fenced":
            body = held.rstrip()
            return body[:-3].rstrip() if body.endswith("```") else held
        return held

    def _decide(self) -> str:
        head = self._held.lstrip()
        if not head or (len(head) < 3 and "```".startswith(head)):
            return ""  # whitespace, "`" or "``": could still open a fence
        if not head.startswith("```"):
            return self._become_plain()
        line_end = head.find("\n")
        if line_end < 0:
            return "" if len(head) <= _MAX_FENCE_HEADER else self._become_plain()
        if not _FENCE_OPEN.match(head[:line_end]):
            return self._become_plain()
        self._mode = "fenced"
        self._held = head[line_end + 1 :]
        return self._release_fenced()

    def _become_plain(self) -> str:
        self._mode = "plain"
        held, self._held = self._held, ""
        return held

    def _release_fenced(self) -> str:
        """All but a trailing run of whitespace and backticks (a closing fence, maybe)."""
        keep = len(self._held) - len(self._held.rstrip(" \t\r\n`"))
        out = self._held[: len(self._held) - keep]
        self._held = self._held[len(out) :]
        return out


def check_content(fmt: JSONFormat | None, text: str) -> str:
    """The answer without a code fence; raises the 502 `GatewayError` when it does not satisfy
    the format. Text is returned unchanged when no JSON format was asked for (None)."""
    if fmt is None:
        return text
    stripper = FenceStripper()
    cleaned = stripper.feed(text) + stripper.finish()
    problem = _problem(fmt, cleaned)
    if problem is not None:
        raise _failure(fmt, problem)
    return cleaned


class StreamJSONCheck:
    """Event filter for one response (see the module docstring): strips a fence as the text
    streams and raises the `GatewayError` at a normal end when the answer is not valid. Make a
    fresh one per attempt; `StreamJSONCheck(None)` passes every event through."""

    def __init__(self, fmt: JSONFormat | None) -> None:
        self._format = fmt
        self._stripper = FenceStripper()
        self._sent: list[str] = []
        self._tool_calls = False

    @property
    def active(self) -> bool:
        return self._format is not None

    def feed(self, event: Event) -> list[Event]:
        if self._format is None:
            return [event]
        if isinstance(event, TextDelta):
            out = self._stripper.feed(event.text)
            self._sent.append(out)
            return [TextDelta(out)] if out else []
        if isinstance(event, ToolCallStart):
            self._tool_calls = True
        elif isinstance(event, MessageStop):
            return self._finish(self._format, event)
        return [event]

    def _finish(self, fmt: JSONFormat, stop: MessageStop) -> list[Event]:
        tail = self._stripper.finish()
        self._sent.append(tail)
        if stop.reason == "end_turn" and not self._tool_calls:
            problem = _problem(fmt, "".join(self._sent))
            if problem is not None:
                raise _failure(fmt, problem)
        return [TextDelta(tail), stop] if tail else [stop]
