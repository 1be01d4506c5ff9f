"""A client's JSON Schema for the answer (`response_format`, `output_config.format`, `text.format`)
that cannot stall the gateway: checked, then run safely.

`json_output.py` validates the model's answer against the client's schema on the event loop,
so the schema is untrusted code in all but name. `safe_validator(schema)` returns a `jsonschema`
validator after these checks (each failure is a `SchemaProblem`, a 400 for the caller):

* size: at most `MAX_SCHEMA_NODES` objects and arrays (the request body's nesting limit already
  bounds the depth to 64);
* regular expressions (`pattern` values, `patternProperties` keys) are compiled with RE2
  (`google-re2`), a linear-time engine: the validator runs them with RE2 too, so `^(a+)+$`
  against `aaaa…b` costs microseconds instead of exponential backtracking in Python's `re`.
  A pattern RE2 cannot run (backreferences, lookaround) is refused, not skipped: the client
  would otherwise get answers that do not honour its schema without knowing.
  `unevaluatedProperties` is refused beside `patternProperties` (jsonschema matches those with
  Python's `re` internally);
* `$ref` cycles that never descend into the instance (`{"$ref": "#"}`, `allOf` pointing back to
  itself...) recurse forever whatever the answer: refused. Recursion that goes through
  `properties`, `items` and the like (a tree) is finite and allowed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote

import jsonschema
import re2
from jsonschema.exceptions import ValidationError

__all__ = ["MAX_SCHEMA_NODES", "SchemaProblem", "compile_pattern", "safe_validator"]

MAX_SCHEMA_NODES = 5_000

# Keywords whose value is data, not a schema: never walked for patterns or references.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples", "example", "description"})
# Keywords that apply a subschema to the SAME instance (no descent): a cycle through only these
# (and $ref) never ends.
_IN_PLACE_ONE = ("not", "if", "then", "else", "$ref")
_IN_PLACE_MANY = ("allOf", "anyOf", "oneOf")

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
_OPTIONS.max_mem = 8 << 20


class SchemaProblem(ValueError):
    """Why a schema is refused (the message names the problem, for a 400)."""


def compile_pattern(pattern: str) -> Any:
    """The RE2 program for a JSON Schema pattern, or SchemaProblem."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise SchemaProblem(
            f"pattern {pattern!r} uses a feature the gateway does not run: {detail} (patterns "
            "are checked with RE2, in linear time: no backreferences or lookaround)"
        ) from None


_cache: dict[str, Any] = {}


def _search(pattern: str, text: str) -> bool:
    program = _cache.get(pattern)
    if program is None:
        program = compile_pattern(pattern)
        if len(_cache) > 1024:
            _cache.clear()
        _cache[pattern] = program
    return program.search(text) is not None


# --- the keywords that run regular expressions, with RE2 ------------------------------------


def _pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(patrn, instance):
        yield ValidationError(f"{_short(instance)!r} does not match {patrn!r}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for k, v in instance.items():
            if _search(pattern, k):
                yield from validator.descend(v, subschema, path=k, schema_path=pattern)


def _additional_properties(
    validator: Any, ap: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [
        k for k in instance if k not in properties and not any(_search(p, k) for p in patterns)
    ]
    if validator.is_type(ap, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], ap, path=extra)
    elif not ap and extras:
        shown = ", ".join(repr(e) for e in sorted(extras))
        yield ValidationError(f"Additional properties are not allowed ({shown} unexpected)")


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:79] + "…"


def safe_validator(schema: dict[str, Any]) -> Any:
    """A validator for a checked schema (see the module docstring); SchemaProblem if refused.
    The schema must already have passed `check_schema`."""
    nodes = list(_walk(schema, "#"))
    if len(nodes) > MAX_SCHEMA_NODES:
        raise SchemaProblem(f"the schema has more than {MAX_SCHEMA_NODES} objects and arrays")
    for _, node in nodes:
        _check_patterns(node)
    keys = {k for _, n in nodes if isinstance(n, dict) for k in n}
    if {"patternProperties", "unevaluatedProperties"} <= keys:
        raise SchemaProblem("'patternProperties' with 'unevaluatedProperties' is not supported")
    _check_cycles(schema, dict(nodes))
    base = jsonschema.validators.validator_for(schema)
    cls = jsonschema.validators.extend(
        base,
        {
            "pattern": _pattern,
            "patternProperties": _pattern_properties,
            "additionalProperties": _additional_properties,
        },
    )
    return cls(schema)


def _walk(node: Any, pointer: str) -> Iterator[tuple[str, Any]]:
    """(JSON pointer, node) of every object and array, data keywords left out; no recursion."""
    stack = [(pointer, node)]
    seen = 0
    while stack:
        at, item = stack.pop()
        if isinstance(item, dict):
            children = [(k, v) for k, v in item.items() if k not in _DATA_KEYWORDS]
        elif isinstance(item, list):
            children = [(str(i), v) for i, v in enumerate(item)]
        else:
            continue
        yield at, item
        seen += 1
        if seen > MAX_SCHEMA_NODES:
            return
        stack.extend((f"{at}/{_escape(str(k))}", v) for k, v in children)


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _check_patterns(node: Any) -> None:
    if not isinstance(node, dict):
        return
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        compile_pattern(pattern)
    props = node.get("patternProperties")
    if isinstance(props, dict):
        for key in props:
            compile_pattern(key)


def _check_cycles(root: dict[str, Any], nodes: dict[str, Any]) -> None:
    """Refuse a cycle of in-place applicators and local $refs (see the module docstring)."""
    edges = {at: list(_in_place(at, node, nodes)) for at, node in nodes.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in edges:
        if state.get(start):
            continue
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(edges[start]))]
        state[start] = 1
        while stack:
            at, nexts = stack[-1]
            step = next(nexts, None)
            if step is None:
                state[at] = 2
                stack.pop()
            elif state.get(step) == 1:
                raise SchemaProblem(
                    f"the schema at {at!r} refers back to {step!r} ($ref, allOf...) without "
                    "descending into the value: it would recurse forever"
                )
            elif not state.get(step):
                state[step] = 1
                stack.append((step, iter(edges.get(step, []))))


def _in_place(at: str, node: Any, nodes: dict[str, Any]) -> Iterator[str]:
    """The nodes `node` applies to the same instance (local $ref targets included)."""
    if not isinstance(node, dict):
        return
    for key in _IN_PLACE_ONE:
        value = node.get(key)
        if key == "$ref":
            if isinstance(value, str) and value.startswith("#"):
                target = _pointer(value)
                if target is not None and target in nodes:
                    yield target
        elif isinstance(value, dict):
            yield f"{at}/{key}"
    for key in _IN_PLACE_MANY:
        value = node.get(key)
        if isinstance(value, list):
            yield from (f"{at}/{key}/{i}" for i, v in enumerate(value) if isinstance(v, dict))


def _pointer(ref: str) -> str | None:
    """`#/a/b` -> the walk's pointer for it (`#`: the root); None for an anchor (`#name`)."""
    fragment = unquote(ref[1:])
    return "#" + fragment if fragment.startswith("/") or not fragment else None
