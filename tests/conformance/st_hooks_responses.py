"""Schemathesis hooks for test_schemathesis_responses.py (loaded by `st` via SCHEMATHESIS_HOOKS).

`before_load_schema` makes two changes to the official OpenAI spec:

1. **Streams.** `createResponse` documents `text/event-stream` with `ResponseStreamEvent` (the
   *data* of one event) as `schema`, while schemathesis validates each *event object*
   (`{"event": …, "data": "<text>"}`) against `schema`: every correct event would fail. The hook
   rewrites it the way schemathesis reads SSE, one alternative per event type the spec lists:
   the `event:` name must equal the data's `type`, and the data must be JSON valid against that
   event's schema (`ResponseCreatedEvent`, `ResponseTextDeltaEvent`, …). Which failure events
   are acceptable is the test's business (it reads every stream body).
2. **The 404 of `deleteResponse`** is documented with `Error`, the *inner* object
   (`{"code", "message", "param", "type"}`), while OpenAI answers every error, this one
   included, wrapped as `{"error": {…}}` (`ErrorResponse`, as all the other operations document,
   and as the SDK reads it). The hook documents `ErrorResponse` there.

`map_case` (applied to the cases of every phase, the coverage phase's included, which
`map_body` would miss):

- the spec lets `model` be any string, so most generated requests would name a model Ki2API
  does not know and stop at its (correct) 404, never reaching translation, the upstream call and
  the encoders. An unknown *string* model is swapped for a spec model id (non-strings stay, for
  the negative cases);
- the spec leaves `model` optional (a stored prompt may carry it), so most generated bodies have
  none, which OpenAI and Ki2API refuse with 400 "Missing required parameter: 'model'". Three
  bodies in four that lack it get a spec model id (the fourth keeps checking that 400);
- three bodies in four that carry a `prompt` (a stored prompt template, which Ki2API refuses
  with a 400 naming `prompt`) lose it: an optional field dropped, the body stays valid;
- half the bodies with no `stream` get `"stream": true` (deterministically), so streamed
  answers get validated as often as plain ones;
- half the string `previous_response_id`s, and half the `response_id`s of `getResponse` and
  `deleteResponse`, become the id of a response stored just before through the gateway's own
  API, so continuations, retrievals and deletions of real responses are validated too; the
  other half check the 404.

`response_format` (docs/sampling.md): Kiro cannot constrain the model, so an answer that is not
the JSON `text.format` asked for is an error on purpose: a 502 `response_format_failed`. The
emulator echoes the prompt, which is never JSON, so these are expected here: `filter_failure`
drops exactly that server error. Any other 5xx still fails.
"""

from __future__ import annotations

import json
import os
import urllib.request
import zlib
from typing import Any

import schemathesis

SCHEMAS = "#/components/schemas/"
DELIBERATE = "response_format_failed"


def _event(name: str, ref: str) -> dict[str, Any]:
    return {
        "properties": {
            "event": {"const": name},
            "data": {"contentMediaType": "application/json", "contentSchema": {"$ref": ref}},
        }
    }


def sse_event_schema(schemas: dict[str, Any]) -> dict[str, Any]:
    """One alternative per event of `ResponseStreamEvent`: the name must equal the data's type."""
    events = []
    for alternative in schemas["ResponseStreamEvent"]["anyOf"]:
        ref = alternative["$ref"]
        kind = schemas[ref.removeprefix(SCHEMAS)]["properties"]["type"]
        names = kind.get("enum") or [kind["const"]]
        events += [_event(name, ref) for name in names]
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
        "anyOf": events,
    }


@schemathesis.hook
def before_load_schema(context: Any, raw_schema: dict[str, Any]) -> None:
    paths, schemas = raw_schema["paths"], raw_schema["components"]["schemas"]
    answer = paths["/responses"]["post"]["responses"]["200"]["content"]
    sse = answer["text/event-stream"]
    if sse.get("schema") != {"$ref": SCHEMAS + "ResponseStreamEvent"}:
        raise ValueError(f"the spec's Responses stream schema changed: {sse.get('schema')!r}")
    sse["schema"] = sse_event_schema(schemas)
    missing = paths["/responses/{response_id}"]["delete"]["responses"]["404"]["content"]
    if missing["application/json"]["schema"] != {"$ref": SCHEMAS + "Error"}:
        raise ValueError("the spec's 404 of deleteResponse changed: drop this part of the hook")
    missing["application/json"]["schema"] = {"$ref": SCHEMAS + "ErrorResponse"}


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure but the 502 of a `text.format` answer that is not JSON."""
    if failure.code != "ST101" or response.status_code != 502:
        return True
    try:
        code = json.loads(response.content)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return True
    return bool(code != DELIBERATE)


def _crc(value: Any) -> int:
    return zlib.crc32(json.dumps(value, sort_keys=True, default=repr).encode())


def _known() -> list[str]:
    known: list[str] = json.loads(os.environ["KI2API_ST_MODELS"])  # set by the test
    return known


def stored_response() -> str:
    """The id of a response stored just now through the gateway's public API."""
    body = {"model": _known()[0], "input": "A response to continue, retrieve or delete."}
    request = urllib.request.Request(
        os.environ["KI2API_ST_BASE"] + "/responses",  # set by the test: 127.0.0.1 only
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "authorization": f"Bearer {os.environ['KI2API_ST_KEY']}",
            "content-type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
        return str(json.loads(answer.read())["id"])


def _body(body: dict[str, Any]) -> dict[str, Any]:
    known = _known()
    model = body.get("model")
    if isinstance(model, str) and model not in known:
        body = {**body, "model": known[_crc(model) % len(known)]}
    elif "model" not in body and _crc(body) % 4:
        body = {**body, "model": known[_crc(body) % len(known)]}
    if "prompt" in body and _crc(body) % 4:
        body = {k: v for k, v in body.items() if k != "prompt"}
    if "stream" not in body and _crc(body) % 2:
        body = {**body, "stream": True}
    previous = body.get("previous_response_id")
    if isinstance(previous, str) and _crc(previous) % 2:
        body = {**body, "previous_response_id": stored_response()}
    return body


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    """Every phase's cases (`map_body` would miss the coverage phase's)."""
    if isinstance(case.body, dict):
        case.body = _body(case.body)
    params = case.path_parameters
    response_id = params.get("response_id") if isinstance(params, dict) else None
    if isinstance(response_id, str) and _crc(response_id) % 2:
        case.path_parameters = {**params, "response_id": stored_response()}
    return case
