"""GatewayError -> what an Anthropic client sees (docs/api-compat.md §B.6). Pure.

Body: `{"type": "error", "error": {"type", "message"}, "request_id"}`. Two errors add
`error.details.error_code` (the shape of the message-threads beta): a `thread` the gateway cannot
hold (`thread_unsupported_request`, with `"unsupported": ["thread"]`: what the SDK's message
threads look for before resending the whole conversation) and an answer that failed the
structured output's check (`response_format_failed`, OpenAI's code for the same 502). The SDK
picks its exception class and retry decision from the status (and `x-should-retry`); Claude Code
reads `retry-after` as whole seconds. INTERNAL errors never show their message.

Context overflow: Claude Code compacts the conversation when a 400 says
`prompt is too long: N tokens > M maximum`; `context_overflow()` rewrites CONTEXT_TOO_LONG
errors into that wording with N our (upward-biased) estimate, never below M + 1, and M the
model's context window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ki2api.core.errors import ErrorKind, GatewayError

__all__ = [
    "ERROR_TABLE",
    "ErrorRow",
    "context_overflow",
    "error_body",
    "error_response",
    "model_not_found",
    "stream_error_body",
]

_INTERNAL_MESSAGE = "Internal server error"
_DEFAULT_RATE_LIMIT_RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class ErrorRow:
    status: int
    type: str
    retry_after: bool = False  # send retry-after (whole seconds) when known (always: RATE)
    should_retry: bool | None = None  # the `x-should-retry` header, when it must override


_INVALID = "invalid_request_error"
_API = "api_error"
# codes a client can act on, sent as `error.details` (the shape of the message-threads beta)
_DETAILS: dict[tuple[ErrorKind, str], dict[str, Any]] = {
    (ErrorKind.INVALID_REQUEST, "thread_unsupported_request"): {"unsupported": ["thread"]},
    (ErrorKind.UPSTREAM_ERROR, "response_format_failed"): {},
}

ERROR_TABLE: dict[ErrorKind, ErrorRow] = {
    ErrorKind.INVALID_REQUEST: ErrorRow(400, _INVALID),
    ErrorKind.REQUEST_TOO_LARGE: ErrorRow(413, "request_too_large"),
    # A wrong client key stays wrong: `x-should-retry: false` stops Claude Code retrying it.
    ErrorKind.AUTHENTICATION: ErrorRow(401, "authentication_error", should_retry=False),
    ErrorKind.NOT_FOUND: ErrorRow(404, "not_found_error"),
    ErrorKind.MODEL_NOT_FOUND: ErrorRow(404, "not_found_error"),
    ErrorKind.CONTEXT_TOO_LONG: ErrorRow(400, _INVALID),
    ErrorKind.UPSTREAM_AUTH: ErrorRow(401, "authentication_error"),
    ErrorKind.NO_CREDENTIALS: ErrorRow(503, _API, should_retry=False),
    ErrorKind.PERMISSION: ErrorRow(403, "permission_error"),
    ErrorKind.RATE_LIMITED: ErrorRow(429, "rate_limit_error", retry_after=True),
    ErrorKind.QUOTA_EXHAUSTED: ErrorRow(
        429, "rate_limit_error", retry_after=True, should_retry=False
    ),
    ErrorKind.UPSTREAM_REJECTED: ErrorRow(400, _INVALID),
    ErrorKind.UPSTREAM_UNAVAILABLE: ErrorRow(529, "overloaded_error", retry_after=True),
    ErrorKind.UPSTREAM_TIMEOUT: ErrorRow(504, "timeout_error"),
    ErrorKind.UPSTREAM_PROTOCOL: ErrorRow(502, _API),
    ErrorKind.UPSTREAM_ERROR: ErrorRow(502, _API),
    ErrorKind.CANCELLED: ErrorRow(499, _INVALID),
    ErrorKind.INTERNAL: ErrorRow(500, _API),
}


def stream_error_body(err: GatewayError) -> dict[str, Any]:
    """`{"type": "error", "error": {type, message}}`: the in-stream `error` event's data."""
    row = ERROR_TABLE[err.kind]
    message = _INTERNAL_MESSAGE if err.kind is ErrorKind.INTERNAL else err.message
    error: dict[str, Any] = {"type": row.type, "message": message}
    details = _DETAILS.get((err.kind, err.code or ""))
    if details is not None:
        error["details"] = {"error_code": err.code, **details}
    return {"type": "error", "error": error}


def error_body(err: GatewayError, request_id: str | None) -> dict[str, Any]:
    body = stream_error_body(err)
    body["request_id"] = request_id
    return body


def error_response(
    err: GatewayError, request_id: str | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(HTTP status, JSON body, extra headers) for an error answered before any body byte."""
    row = ERROR_TABLE[err.kind]
    return row.status, error_body(err, request_id), _headers(err, row)


def _headers(err: GatewayError, row: ErrorRow) -> dict[str, str]:
    headers: dict[str, str] = {}
    retry_after = err.retry_after
    if retry_after is None and err.kind is ErrorKind.RATE_LIMITED:
        retry_after = _DEFAULT_RATE_LIMIT_RETRY_S
    if row.retry_after and retry_after is not None and math.isfinite(retry_after):
        headers["retry-after"] = str(max(1, math.ceil(retry_after)))
    if row.should_retry is not None:
        headers["x-should-retry"] = "true" if row.should_retry else "false"
    return headers


def context_overflow(err: GatewayError, *, prompt_tokens: int, context_window: int) -> GatewayError:
    """`err` in Claude Code's compaction wording when it is a CONTEXT_TOO_LONG, else `err`."""
    if err.kind is not ErrorKind.CONTEXT_TOO_LONG:
        return err
    n = max(prompt_tokens, context_window + 1)
    return GatewayError(
        ErrorKind.CONTEXT_TOO_LONG,
        f"prompt is too long: {n} tokens > {context_window} maximum",
        param=err.param,
        code=err.code,
    )


def model_not_found(name: str, hint: str) -> GatewayError:
    """The 404 for a model the catalogue does not know, in Anthropic's wording (`model: <name>`);
    `hint`: what the catalogue suggests instead (`core.models.not_offered_hint`), or empty."""
    return GatewayError(ErrorKind.MODEL_NOT_FOUND, f"model: {name}{hint}", param="model")
