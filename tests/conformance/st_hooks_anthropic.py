"""Schemathesis hooks for test_schemathesis_anthropic.py (loaded by `st` via SCHEMATHESIS_HOOKS).

`before_load_schema` makes three changes to the official Anthropic spec:

1. **Streams.** `messages_post` documents only `application/json` for 200, though `stream: true`
   answers `text/event-stream`; every streamed answer would fail `content_type_conformance`.
   The hook adds `text/event-stream` with a schema for each event as schemathesis parses it
   (`{"event": <name>, "data": <text>}`): the `event:` name must equal the data's `type`, and
   the data must be JSON valid against that event's schema in the spec (`MessageStartEvent`,
   `ContentBlockDeltaEvent`, …) or be a `ping`. An `error` event fails, but the deliberate one
   of structured outputs (below).
2. **Auth.** The spec declares no security scheme, so `ignored_auth` would check nothing. The
   hook declares the `x-api-key` header as an API key scheme for the four operations.
3. **The `x-api-key` header parameter** of `models_list` / `models_get` is dropped: it is the
   credential (now the security scheme), and random values would turn those requests into
   401s instead of exercising the listing.

`map_body`: the spec lets `model` be any string, so most generated requests would name a model
Ki2API does not know and stop at its (correct) 404. An unknown *string* model is swapped for a
known one (non-strings stay, for the negative cases). Half the `messages_post` bodies without
`stream` get `"stream": true` (deterministically), so streams are checked as often as JSON.

`map_path_parameters`: likewise for `models_get`: half the generated `model_id`s are swapped for
known ids so that successful retrievals are validated too; the rest check the 404.

Structured outputs (`output_config.format`, docs/api-compat.md §B.2): Kiro cannot constrain the
model, so an answer that is not the JSON asked for is an error on purpose: a 502 `api_error`
with `error.details.error_code: "response_format_failed"`, or that error as the last event of a
stream. The emulator echoes the prompt, which is never JSON, so these are expected here:
`filter_failure` drops exactly that 502 (a server error, and a status the spec does not list),
and the SSE schema admits that one `error` event. Any other 5xx or error event still fails.
"""

from __future__ import annotations

import json
import os
import zlib
from typing import Any

import schemathesis

SCHEMAS = "#/components/schemas/"
STREAM_EVENTS = {
    "message_start": "MessageStartEvent",
    "message_delta": "MessageDeltaEvent",
    "message_stop": "MessageStopEvent",
    "content_block_start": "ContentBlockStartEvent",
    "content_block_delta": "ContentBlockDeltaEvent",
    "content_block_stop": "ContentBlockStopEvent",
}
PING = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"const": "ping"}},
}
DELIBERATE = "response_format_failed"
# The one error event Ki2API sends on purpose (see the module docstring).
FORMAT_FAILED = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message", "details"],
            "properties": {
                "type": {"const": "api_error"},
                "message": {"type": "string"},
                "details": {
                    "type": "object",
                    "required": ["error_code"],
                    "properties": {"error_code": {"const": DELIBERATE}},
                },
            },
        },
    },
}
OPERATIONS = {
    ("/v1/messages", "post"),
    ("/v1/messages/count_tokens", "post"),
    ("/v1/models", "get"),
    ("/v1/models/{model_id}", "get"),
}


def _event(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "properties": {
            "event": {"const": name},
            "data": {"contentMediaType": "application/json", "contentSchema": schema},
        }
    }


def sse_event_schema() -> dict[str, Any]:
    events = [_event(name, {"$ref": SCHEMAS + ref}) for name, ref in STREAM_EVENTS.items()]
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
        "oneOf": [*events, _event("ping", PING), _event("error", FORMAT_FAILED)],
    }


@schemathesis.hook
def before_load_schema(context: Any, raw_schema: dict[str, Any]) -> None:
    schemas = raw_schema["components"]["schemas"]
    missing = [ref for ref in STREAM_EVENTS.values() if ref not in schemas]
    if missing:
        raise ValueError(f"the spec's stream event schemas changed, missing: {missing}")
    answer = raw_schema["paths"]["/v1/messages"]["post"]["responses"]["200"]["content"]
    if "text/event-stream" in answer:
        raise ValueError("the spec now documents the stream: drop this part of the hook")
    answer["text/event-stream"] = {"schema": sse_event_schema()}

    raw_schema["components"].setdefault("securitySchemes", {})["ApiKeyAuth"] = {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
    }
    for path, method in OPERATIONS:
        operation = raw_schema["paths"][path][method]
        operation["security"] = [{"ApiKeyAuth": []}]
        operation["parameters"] = [
            p for p in operation.get("parameters", []) if p.get("name", "").lower() != "x-api-key"
        ]


def is_deliberate(status: int, body: bytes) -> bool:
    """The documented 502 for an answer that does not satisfy `output_config.format`."""
    try:
        error = json.loads(body)["error"]
        return status == 502 and error["details"]["error_code"] == DELIBERATE
    except (ValueError, KeyError, TypeError):
        return False


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure but those of the 502 of a structured answer that is not JSON."""
    if failure.code not in ("ST101", "ST103") or response.status_code != 502:
        return True
    return not is_deliberate(response.status_code, response.content)


def _crc(value: Any) -> int:
    return zlib.crc32(json.dumps(value, sort_keys=True, default=repr).encode())


def _known() -> list[str]:
    known: list[str] = json.loads(os.environ["KI2API_ST_MODELS"])  # set by the test
    return known


def _path(context: Any) -> str:
    operation = getattr(context, "operation", None)
    return str(getattr(operation, "path", ""))


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    if not isinstance(body, dict):
        return body
    known = _known()
    model = body.get("model")
    if isinstance(model, str) and model not in known:
        body = {**body, "model": known[_crc(model) % len(known)]}
    if _path(context) == "/v1/messages" and "stream" not in body and _crc(body) % 2:
        body = {**body, "stream": True}
    return body


@schemathesis.hook
def map_path_parameters(context: Any, path_parameters: Any) -> Any:
    if not isinstance(path_parameters, dict):
        return path_parameters
    model_id = path_parameters.get("model_id")
    known = _known()
    if isinstance(model_id, str) and model_id not in known and _crc(model_id) % 2:
        return {**path_parameters, "model_id": known[_crc(model_id) % len(known)]}
    return path_parameters
