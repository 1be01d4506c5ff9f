"""Reading the JSON payloads of Kiro's event-stream frames: each field checked for its type, and
a payload that is not what its event type promises raised as UPSTREAM_PROTOCOL (corrupt data
is never downgraded to text). Pure.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from ki2api.core.errors import ErrorKind, GatewayError

__all__ = ["load_payload", "number", "optional_field", "protocol_error", "rounded", "tool_fragment"]


def protocol_error(message: str) -> GatewayError:
    return GatewayError(ErrorKind.UPSTREAM_PROTOCOL, message)


def load_payload(event_type: str, raw: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise protocol_error(f"Kiro sent a malformed {event_type} payload (invalid JSON)") from None
    if not isinstance(obj, dict):
        raise protocol_error(f"Kiro sent a malformed {event_type} payload (not a JSON object)")
    inner = obj.get(event_type)
    if len(obj) == 1 and isinstance(inner, dict):  # the {"toolUseEvent": {...}} wrapper
        return inner
    return obj


def optional_field(payload: dict[str, Any], name: str, kind: type, event: str) -> Any:
    """An optional field that, when present and not null, must have the given type."""
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise protocol_error(f"Kiro sent a malformed {event} payload ({name!r} has the wrong type)")
    return value


def number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def rounded(value: float | None) -> int | None:
    return None if value is None else round(value)


def tool_fragment(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    raise protocol_error("Kiro sent a malformed toolUseEvent payload ('input' has the wrong type)")
