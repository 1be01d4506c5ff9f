"""Anthropic structured outputs (docs/api-compat.md §B.2): `output_config.format` and the older
top-level `output_format` (beta `structured-outputs-2025-11-13`), both
`{"type": "json_schema", "schema": {...}}`, -> the neutral `JSONFormat` of
`frontends/json_output.py`, which does the work: the instruction upstream, fence stripping, the
check of the whole answer. The answer stays what Anthropic returns: a text block holding the
JSON, `stop_reason: "end_turn"`.

A format that is not an object, a `type` other than `json_schema`, a missing or unusable schema,
and both parameters at once are a 400 `invalid_request_error` naming the parameter. An answer
that does not match is a 502 `api_error` naming the parameter (streaming: the in-stream `error`
event, no `message_stop`).

`thread` (the message-threads beta) is not supported: `thread_unsupported()` is the 400 the SDK
recognises (`error.details.error_code: "thread_unsupported_request"`), after which it sends the
whole conversation without `thread`; a continuation is never answered without its history.
"""

from __future__ import annotations

from typing import Any

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.frontends.json_output import JSONFormat, json_schema_format

__all__ = [
    "CONFIG_PARAM",
    "LEGACY_PARAM",
    "THREAD_UNSUPPORTED",
    "parse_output_format",
    "thread_unsupported",
    "wants_thread",
]

CONFIG_PARAM = "output_config.format"
LEGACY_PARAM = "output_format"
THREAD_UNSUPPORTED = "thread_unsupported_request"


def parse_output_format(
    output_config: dict[str, Any] | None, output_format: Any
) -> JSONFormat | None:
    """The JSON format asked for (None: free text); an unusable one is a 400 with `param`."""
    configured = (output_config or {}).get("format")
    if configured is not None and output_format is not None:
        raise _invalid(
            f"{LEGACY_PARAM}: give either `{CONFIG_PARAM}` or the older `{LEGACY_PARAM}`, not both",
            LEGACY_PARAM,
        )
    if configured is not None:
        return _parse(configured, CONFIG_PARAM)
    if output_format is not None:
        return _parse(output_format, LEGACY_PARAM)
    return None


def _parse(spec: Any, param: str) -> JSONFormat:
    if not isinstance(spec, dict):
        raise _invalid(f"{param}: Input should be an object", param)
    kind = spec.get("type")
    if kind != "json_schema":
        raise _invalid(
            f"{param}.type: Input should be 'json_schema' (got {kind!r})", f"{param}.type"
        )
    schema = spec.get("schema")
    if schema is None:
        raise _invalid(f"{param}.schema: Field required", f"{param}.schema")
    return json_schema_format(schema, schema_param=f"{param}.schema", param=param)


def wants_thread(thread: Any) -> bool:
    """Does the request ask for a message thread (`create` or `continue`)? null / false: no."""
    return thread is not None and thread is not False


def thread_unsupported() -> GatewayError:
    """The 400 the anthropic SDK takes as "resend the whole conversation without `thread`"."""
    return GatewayError(
        ErrorKind.INVALID_REQUEST,
        "thread: message threads are not supported by this gateway; send the whole "
        "conversation in `messages` without `thread`.",
        param="thread",
        code=THREAD_UNSUPPORTED,
    )


def _invalid(message: str, param: str) -> GatewayError:
    return GatewayError(ErrorKind.INVALID_REQUEST, message, param=param)
