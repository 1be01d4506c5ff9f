"""`response_format` (`json_object`, `json_schema`) for a model that cannot be constrained.

Kiro has no JSON mode, so the gateway (1) tells the model what to answer, (2) removes a markdown
code fence the model may wrap its JSON in, and (3) checks the answer when it is complete:

* `instruction(rf)` is a text for the request's system texts (None for `text` or no format).
  It also checks the format itself: a missing `json_schema`, a schema that is not a valid JSON
  Schema, one with a non-local `$ref`, and one `schema_safety` refuses (too big, a pattern RE2
  cannot run, a `$ref` cycle that never ends) is a 400 with `param`.
* `StreamJSONCheck(rf)` filters the response's events, streaming or not: answer text passes as
  it comes except a leading fence line and a closing fence, which are dropped. At a normal end
  (`MessageStop("end_turn")`, no tool calls) it parses and validates the whole answer and, if it
  does not satisfy the format, RAISES the `GatewayError` instead of passing the stop on: the
  streaming writer turns that into its in-stream error event (no finish chunk, no `[DONE]`), the
  non-streaming path into a 502. Answers cut by `max_tokens` or a stop string, and answers that
  call tools, are not checked: their finish (`length`, `stop`, `tool_calls`) tells the client.
* `check_content(rf, text)` is the same check for one whole text; it returns the cleaned text.

The error is `UPSTREAM_ERROR` (HTTP 502, type `server_error`), code `response_format_failed`,
param `response_format`: the request was fine, the model's answer was not; the SDKs retry a 502,
and a fresh answer often passes. Schemas are checked with the `jsonschema` package (the dialect
named by `$schema`, else the newest); `strict` is accepted and changes nothing, since no schema
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
from ki2api.frontends.openai.schema_safety import SchemaProblem, safe_validator
from ki2api.frontends.openai.wire import ResponseFormat

__all__ = ["JSONFormat", "StreamJSONCheck", "check_content", "instruction", "parse_format"]

_PARAM = "response_format.json_schema"
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
    """A checked `response_format`; `validator` is None for `json_object`."""

    kind: Literal["json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    schema: dict[str, Any] | None = None
    validator: Any = None


def parse_format(rf: ResponseFormat | None) -> JSONFormat | None:
    """The JSON format asked for (None: plain text); an unusable one is a 400 with `param`."""
    if rf is None or rf.type == "text":
        return None
    if rf.type == "json_object":
        return JSONFormat("json_object")
    spec = rf.json_schema
    if spec is None:
        raise _invalid(f"Missing required parameter: '{_PARAM}'.", _PARAM)
    name = spec.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _invalid(
            f"Invalid '{_PARAM}.name': expected 1 to 64 letters, digits, '_' or '-'.",
            f"{_PARAM}.name",
        )
    description = spec.get("description")
    schema = spec.get("schema")
    if schema is None:
        return JSONFormat("json_schema", name, _str_or_none(description))
    if not isinstance(schema, dict):
        raise _invalid(
            f"Invalid type for '{_PARAM}.schema': expected an object.", f"{_PARAM}.schema"
        )
    return JSONFormat("json_schema", name, _str_or_none(description), schema, _validator(schema))


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _validator(schema: dict[str, Any]) -> Any:
    ref = _remote_ref(schema)
    if ref is not None:
        raise _invalid(
            f"Invalid '{_PARAM}.schema': only local references ('#...') are supported, "
            f"not {ref!r}.",
            f"{_PARAM}.schema",
        )
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
        return safe_validator(schema)
    except SchemaError as exc:
        detail = _short(exc.message)
        raise _invalid(
            f"Invalid '{_PARAM}.schema': not a valid JSON Schema: {detail}", f"{_PARAM}.schema"
        ) from None
    except SchemaProblem as exc:
        raise _invalid(f"Invalid '{_PARAM}.schema': {exc}.", f"{_PARAM}.schema") from None
    except RecursionError:
        raise _invalid(
            f"Invalid '{_PARAM}.schema': it nests or refers to itself too deeply to check.",
            f"{_PARAM}.schema",
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


def instruction(rf: ResponseFormat | None) -> str | None:
    """The text to append to the system texts, or None when the answer is free text."""
    fmt = parse_format(rf)
    if fmt is None:
        return None
    if fmt.schema is None:
        named = f" ({_label(fmt)})" if fmt.name else ""
        return f"Answer with one JSON object{named} and nothing else. {_RULES}"
    schema = json.dumps(fmt.schema, ensure_ascii=False, indent=2, sort_keys=False)
    return (
        f"Answer with one JSON value that validates against the JSON Schema below "
        f"({_label(fmt)}) and nothing else. {_RULES} Use exactly the property names the schema "
        f"defines and include every required property.\n\nJSON Schema:\n{schema}"
    )


def _label(fmt: JSONFormat) -> str:
    return f'"{fmt.name}": {fmt.description}' if fmt.description else f'"{fmt.name}"'


def _failure(fmt: JSONFormat, detail: str) -> GatewayError:
    wanted = "a JSON object" if fmt.kind == "json_object" else f"the requested schema {fmt.name!r}"
    return GatewayError(
        ErrorKind.UPSTREAM_ERROR,
        f"The model's answer was not valid JSON for {wanted} (response_format): {detail} "
        "Kiro cannot constrain the model's output; a retry may succeed.",
        param="response_format",
        code="response_format_failed",
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


def check_content(rf: ResponseFormat | None, text: str) -> str:
    """The answer without a code fence; raises the 502 `GatewayError` when it does not satisfy
    the format. Text is returned unchanged when no JSON format was asked for."""
    fmt = parse_format(rf)
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
    streams and raises the `GatewayError` at a normal end when the answer is not valid."""

    def __init__(self, rf: ResponseFormat | None) -> None:
        self._format = parse_format(rf)
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
