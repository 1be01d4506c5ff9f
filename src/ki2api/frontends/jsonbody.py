"""Request bodies as JSON objects, with a nesting limit every frontend shares."""

from __future__ import annotations

from typing import Any

import orjson

from ki2api.core.errors import ErrorKind, GatewayError

__all__ = ["MAX_DEPTH", "nesting_depth", "parse_json_object"]

# Deep enough for any real JSON schema; shallow enough that nothing downstream (orjson.dumps,
# recursive translators) can hit a recursion limit.
MAX_DEPTH = 64

BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The request body must be JSON.)"
)


def nesting_depth(value: Any, limit: int) -> int:
    """The nesting depth of `value`, counting stops as soon as it passes `limit`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_json_object(body: bytes, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """The body as a JSON object, or an INVALID_REQUEST error a client can act on."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise GatewayError(ErrorKind.INVALID_REQUEST, BAD_JSON) from None
    if not isinstance(data, dict):
        raise GatewayError(
            ErrorKind.INVALID_REQUEST, "Invalid type for the request body: expected a JSON object."
        )
    if nesting_depth(data, max_depth) > max_depth:
        raise GatewayError(
            ErrorKind.INVALID_REQUEST,
            f"The request body is nested more than {max_depth} levels deep.",
        )
    return data
