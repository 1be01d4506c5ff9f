"""GatewayError -> what an OpenAI client sees (docs/api-compat.md §A.7).

The official SDK picks its exception class and its retry decision from the HTTP status (and
`x-should-retry`), then reads `body["error"]` for message, type, param and code: all four keys
are always present. INTERNAL errors never show their message: it could describe our internals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ki2api.core.errors import ErrorKind, GatewayError

__all__ = ["ERROR_TABLE", "ErrorRow", "error_response", "model_not_found", "stream_error_body"]

_INTERNAL_MESSAGE = "The server had an error while processing your request. Sorry about that!"


@dataclass(frozen=True, slots=True)
class ErrorRow:
    status: int
    type: str
    code: str | None = None
    param: str | None = None  # used when the error carries none
    retry_after: bool = False  # send retry-after / retry-after-ms when known (or always: RATE)
    should_retry: bool | None = None  # the `x-should-retry` header, when it must override


_INVALID = "invalid_request_error"
_SERVER = "server_error"

ERROR_TABLE: dict[ErrorKind, ErrorRow] = {
    ErrorKind.INVALID_REQUEST: ErrorRow(400, _INVALID),
    ErrorKind.REQUEST_TOO_LARGE: ErrorRow(413, _INVALID, "request_too_large"),
    # A wrong client key stays wrong: `x-should-retry: false` stops SDKs retrying it.
    ErrorKind.AUTHENTICATION: ErrorRow(401, _INVALID, "invalid_api_key", should_retry=False),
    ErrorKind.NOT_FOUND: ErrorRow(404, _INVALID),
    ErrorKind.MODEL_NOT_FOUND: ErrorRow(404, _INVALID, "model_not_found", "model"),
    ErrorKind.CONTEXT_TOO_LONG: ErrorRow(400, _INVALID, "context_length_exceeded", "messages"),
    ErrorKind.UPSTREAM_AUTH: ErrorRow(401, "authentication_error", "upstream_auth"),
    ErrorKind.NO_CREDENTIALS: ErrorRow(503, _SERVER, "no_credentials"),
    ErrorKind.PERMISSION: ErrorRow(403, "permission_error", "permission_denied"),
    ErrorKind.RATE_LIMITED: ErrorRow(429, "requests", "rate_limit_exceeded", retry_after=True),
    ErrorKind.QUOTA_EXHAUSTED: ErrorRow(
        429, "insufficient_quota", "insufficient_quota", retry_after=True, should_retry=False
    ),
    ErrorKind.UPSTREAM_REJECTED: ErrorRow(400, _INVALID, "upstream_rejected"),
    ErrorKind.UPSTREAM_UNAVAILABLE: ErrorRow(
        503, _SERVER, "upstream_unavailable", retry_after=True
    ),
    ErrorKind.UPSTREAM_TIMEOUT: ErrorRow(504, _SERVER, "upstream_timeout"),
    ErrorKind.UPSTREAM_PROTOCOL: ErrorRow(502, _SERVER, "upstream_protocol_error"),
    ErrorKind.UPSTREAM_ERROR: ErrorRow(502, _SERVER, "upstream_error"),
    ErrorKind.CANCELLED: ErrorRow(499, _INVALID, "request_cancelled"),
    ErrorKind.INTERNAL: ErrorRow(500, _SERVER),
}

_DEFAULT_RATE_LIMIT_RETRY_S = 1.0


def stream_error_body(err: GatewayError) -> dict[str, Any]:
    """`{"error": {message, type, param, code}}`: the body of an error response or SSE event."""
    row = ERROR_TABLE[err.kind]
    internal = err.kind is ErrorKind.INTERNAL
    return {
        "error": {
            "message": _INTERNAL_MESSAGE if internal else err.message,
            "type": row.type,
            "param": None if internal else (err.param or row.param),
            "code": None if internal else (err.code or row.code),
        }
    }


def error_response(err: GatewayError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(HTTP status, JSON body, extra headers) for an error answered before any body byte."""
    row = ERROR_TABLE[err.kind]
    return row.status, stream_error_body(err), _headers(err, row)


def _headers(err: GatewayError, row: ErrorRow) -> dict[str, str]:
    headers: dict[str, str] = {}
    retry_after = err.retry_after
    if retry_after is None and err.kind is ErrorKind.RATE_LIMITED:
        retry_after = _DEFAULT_RATE_LIMIT_RETRY_S
    if row.retry_after and retry_after is not None and math.isfinite(retry_after):
        headers["retry-after"] = str(max(1, math.ceil(retry_after)))
        headers["retry-after-ms"] = str(max(1, math.ceil(retry_after * 1000)))
    if row.should_retry is not None:
        headers["x-should-retry"] = "true" if row.should_retry else "false"
    return headers


def model_not_found(name: str, hint: str) -> GatewayError:
    """The 404 for a model the catalogue does not know, in OpenAI's wording; `hint`: what the
    catalogue suggests instead (`core.models.not_offered_hint`), or empty."""
    return GatewayError(
        ErrorKind.MODEL_NOT_FOUND,
        f"The model `{name}` does not exist or you do not have access to it." + hint,
        param="model",
        code="model_not_found",
    )
