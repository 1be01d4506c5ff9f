"""Turn a pydantic `ValidationError` into one OpenAI-style message and a dotted `param` path
(both frontends use it: it is shared here so that neither imports the other).

Pydantic's error locations contain segments that are not in the request: union tags (`'user'`
for a message discriminated by role) and union member names (`'str'`, `'list[...]'`). The path is
therefore rebuilt by walking the request data: a segment that indexes the current node is kept,
any other is skipped (a `missing` key at the end is kept).
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from pydantic_core import ErrorDetails

__all__ = ["describe_validation_error"]

Path = tuple[str | int, ...]

_EXPECTED: dict[str, str] = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}
_BOUNDS = (
    ("ge", "below minimum value. Expected a value >="),
    ("gt", "below minimum value. Expected a value >"),
    ("le", "above maximum value. Expected a value <="),
    ("lt", "above maximum value. Expected a value <"),
)
_DISCRIMINATED = {"union_tag_invalid", "union_tag_not_found"}


def describe_validation_error(exc: ValidationError, data: Any) -> tuple[str, str | None]:
    """(message, param) for the most specific error of the first failing top-level field."""
    errors = exc.errors()
    located = [(_clean_path(e, data), e) for e in errors]
    top = located[0][0][:1]
    group = [(p, e) for p, e in located if p[:1] == top]
    path, err = max(group, key=lambda pe: (len(pe[0]), pe[1]["type"] not in _EXPECTED))
    if err["type"] in _DISCRIMINATED:
        path = (*path, str(err.get("ctx", {}).get("discriminator", "")).strip("'"))
    if err["type"] in _EXPECTED:
        expected = [_EXPECTED[e["type"]] for p, e in group if p == path and e["type"] in _EXPECTED]
        message = _type_message(_display(path), expected, err["input"])
    else:
        message = _value_message(_display(path), err)
    return message, ".".join(str(s) for s in path) or None


def _clean_path(err: ErrorDetails, data: Any) -> Path:
    node = data
    kept: list[str | int] = []
    loc = err["loc"]
    for i, seg in enumerate(loc):
        if isinstance(seg, int) and isinstance(node, list) and 0 <= seg < len(node):
            node = node[seg]
        elif isinstance(seg, str) and isinstance(node, dict) and seg in node:
            node = node[seg]
        elif i == len(loc) - 1 and err["type"] == "missing":
            pass
        else:
            continue
        kept.append(seg)
    return tuple(kept)


def _display(path: Path) -> str:
    out = ""
    for seg in path:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else seg)
    return out or "body"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for kind, name in (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (list, "an array"),
        (dict, "an object"),
    ):
        if isinstance(value, kind):
            return name
    return "an unknown type"


def _type_message(where: str, expected: list[str], value: Any) -> str:
    wanted = " or ".join(dict.fromkeys(expected))
    return f"Invalid type for '{where}': expected {wanted}, but got {_json_type(value)} instead."


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return repr(value)


def _value_message(where: str, err: ErrorDetails) -> str:
    kind, ctx, value = err["type"], err.get("ctx", {}), err["input"]
    if kind in ("missing", "union_tag_not_found"):
        return f"Missing required parameter: '{where}'."
    if kind in ("literal_error", "union_tag_invalid"):
        expected = ctx.get("expected", ctx.get("expected_tags", ""))
        shown = _show(ctx.get("tag", value))
        return f"Invalid value for '{where}': {shown}. Supported values are: {expected}."
    if kind == "too_short" and ctx.get("actual_length") == 0:
        return (
            f"Invalid '{where}': empty array. Expected an array with minimum length "
            f"{ctx.get('min_length')}, but got an empty array instead."
        )
    if kind in ("too_short", "too_long"):
        bound = "minimum" if kind == "too_short" else "maximum"
        limit = ctx.get("min_length" if kind == "too_short" else "max_length")
        return (
            f"Invalid '{where}': expected an array with {bound} length {limit}, "
            f"but got an array with length {ctx.get('actual_length')} instead."
        )
    if kind == "string_too_short":
        return f"Invalid '{where}': expected a non-empty string."
    for key, words in _BOUNDS:
        if key in ctx:
            return f"Invalid '{where}': {words} {_show(ctx[key])}, but got {_show(value)} instead."
    return f"Invalid '{where}': {err['msg']}."
