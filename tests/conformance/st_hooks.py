"""Schemathesis hooks for test_schemathesis_openai.py (loaded by `st` through SCHEMATHESIS_HOOKS).

`map_body`: the spec lets `model` be any string, so most generated requests would name a model
Ki2API does not know and stop at its (correct) 404, never reaching translation, the upstream
call and the response encoders. This hook swaps an unknown *string* model for a known one; the
request keeps its validity class (any string is a valid `model`), and non-string models are
left alone for the negative cases. It also adds `"stream": true` to half the chat bodies that
have no `stream` (deterministically), so streamed answers get validated as often as plain ones.

`before_load_schema`: the spec documents the `text/event-stream` answer of createChatCompletion
with the *chunk* schema as `schema`, while schemathesis validates each *event object*
(`{"event": …, "data": "<text>"}`) against `schema`, so every chunk would fail with
"'choices' is a required property". The hook rewrites that `schema` the way schemathesis reads
SSE: every event's `data` is JSON validating as the chunk schema, except the final `[DONE]`.

`response_format` (docs/sampling.md): Kiro cannot constrain the model, so an answer that is not
the JSON asked for is an error on purpose: a 502 `response_format_failed`, or that error as the
last event of a stream. The emulator echoes the prompt, which is never JSON, so these are
expected here: `filter_failure` drops exactly that server error, and the SSE schema admits that
one error event (shaped as the spec's `ErrorResponse`). Any other 5xx or error event still fails.
"""

from __future__ import annotations

import json
import os
import zlib
from typing import Any

import schemathesis

CHUNK = "#/components/schemas/CreateChatCompletionStreamResponse"
DELIBERATE = "response_format_failed"
# The one error Ki2API reports on purpose: the answer did not satisfy `response_format`
# (docs/sampling.md). The emulator echoes the prompt, which is never JSON.
RESPONSE_FORMAT_FAILED = {
    "allOf": [
        {"$ref": "#/components/schemas/ErrorResponse"},
        {"properties": {"error": {"properties": {"code": {"const": DELIBERATE}}}}},
    ]
}
SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string"}},
    "if": {"properties": {"data": {"const": "[DONE]"}}},
    "else": {
        "properties": {
            "data": {
                "contentMediaType": "application/json",
                "contentSchema": {"anyOf": [{"$ref": CHUNK}, RESPONSE_FORMAT_FAILED]},
            }
        }
    },
}


@schemathesis.hook
def before_load_schema(context: Any, raw_schema: dict[str, Any]) -> None:
    answer = raw_schema["paths"]["/chat/completions"]["post"]["responses"]["200"]["content"]
    sse = answer["text/event-stream"]
    if sse.get("schema") != {"$ref": CHUNK}:
        raise ValueError(f"the spec's chat stream schema changed: {sse.get('schema')!r}")
    sse["schema"] = SSE_EVENT


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure but the 502 of a `response_format` answer that is not JSON."""
    if failure.code != "ST101" or response.status_code != 502:
        return True
    try:
        code = json.loads(response.content)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return True
    return bool(code != DELIBERATE)


def _crc(value: Any) -> int:
    return zlib.crc32(json.dumps(value, sort_keys=True, default=repr).encode())


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    if not isinstance(body, dict):
        return body
    known: list[str] = json.loads(os.environ["KI2API_ST_MODELS"])  # set by the test
    model = body.get("model")
    if isinstance(model, str) and model not in known:
        body = {**body, "model": known[_crc(model) % len(known)]}
    if "stream" not in body and "messages" in body and _crc(body) % 2:
        body = {**body, "stream": True}
    return body
