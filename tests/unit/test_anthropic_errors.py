"""GatewayError -> Anthropic error responses (docs/api-compat.md §B.6) for every ErrorKind; the
overflow wording."""

from __future__ import annotations

import re

import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.frontends.anthropic.error_json import (
    ERROR_TABLE,
    context_overflow,
    error_response,
    stream_error_body,
)

# kind -> (status, error.type, headers)
EXPECTED: dict[ErrorKind, tuple[int, str, dict[str, str]]] = {
    ErrorKind.INVALID_REQUEST: (400, "invalid_request_error", {}),
    ErrorKind.REQUEST_TOO_LARGE: (413, "request_too_large", {}),
    ErrorKind.AUTHENTICATION: (401, "authentication_error", {"x-should-retry": "false"}),
    ErrorKind.NOT_FOUND: (404, "not_found_error", {}),
    ErrorKind.MODEL_NOT_FOUND: (404, "not_found_error", {}),
    ErrorKind.CONTEXT_TOO_LONG: (400, "invalid_request_error", {}),
    ErrorKind.UPSTREAM_AUTH: (401, "authentication_error", {}),
    ErrorKind.NO_CREDENTIALS: (503, "api_error", {"x-should-retry": "false"}),
    ErrorKind.PERMISSION: (403, "permission_error", {}),
    ErrorKind.RATE_LIMITED: (429, "rate_limit_error", {"retry-after": "1"}),
    ErrorKind.QUOTA_EXHAUSTED: (429, "rate_limit_error", {"x-should-retry": "false"}),
    ErrorKind.UPSTREAM_REJECTED: (400, "invalid_request_error", {}),
    ErrorKind.UPSTREAM_UNAVAILABLE: (529, "overloaded_error", {}),
    ErrorKind.UPSTREAM_TIMEOUT: (504, "timeout_error", {}),
    ErrorKind.UPSTREAM_PROTOCOL: (502, "api_error", {}),
    ErrorKind.UPSTREAM_ERROR: (502, "api_error", {}),
    ErrorKind.CANCELLED: (499, "invalid_request_error", {}),
    ErrorKind.INTERNAL: (500, "api_error", {}),
}


def test_every_kind_has_a_row() -> None:
    assert set(ERROR_TABLE) == set(ErrorKind) == set(EXPECTED)


@pytest.mark.parametrize("kind", list(ErrorKind), ids=[k.value for k in ErrorKind])
def test_error_response(kind: ErrorKind) -> None:
    status, body, headers = error_response(GatewayError(kind, "what happened"), "req_1")
    want_status, want_type, want_headers = EXPECTED[kind]
    message = "Internal server error" if kind is ErrorKind.INTERNAL else "what happened"
    assert (status, headers) == (want_status, want_headers)
    assert body == {
        "type": "error",
        "error": {"type": want_type, "message": message},
        "request_id": "req_1",
    }
    assert stream_error_body(GatewayError(kind, "what happened")) == {
        "type": "error",
        "error": {"type": want_type, "message": message},
    }


@pytest.mark.parametrize(
    ("kind", "retry_after", "header"),
    [
        (ErrorKind.RATE_LIMITED, 2.2, "3"),
        (ErrorKind.RATE_LIMITED, 0.1, "1"),
        (ErrorKind.UPSTREAM_UNAVAILABLE, 7.0, "7"),
        (ErrorKind.QUOTA_EXHAUSTED, 30.0, "30"),  # when the first account resets
        (ErrorKind.RATE_LIMITED, float("inf"), None),
    ],
    ids=["rounded up", "at least 1", "overloaded", "quota: reset", "infinite: none"],
)
def test_retry_after_whole_seconds(kind: ErrorKind, retry_after: float, header: str | None) -> None:
    _, _, headers = error_response(GatewayError(kind, "x", retry_after=retry_after))
    assert headers.get("retry-after") == header


@pytest.mark.parametrize(
    ("estimate", "window", "message"),
    [
        (250_000, 200_000, "prompt is too long: 250000 tokens > 200000 maximum"),
        (120_000, 200_000, "prompt is too long: 200001 tokens > 200000 maximum"),
    ],
    ids=["estimate over the window", "never below the window"],
)
def test_context_overflow_wording(estimate: int, window: int, message: str) -> None:
    err = context_overflow(
        GatewayError(ErrorKind.CONTEXT_TOO_LONG, "too big"),
        prompt_tokens=estimate,
        context_window=window,
    )
    assert err.kind is ErrorKind.CONTEXT_TOO_LONG and err.message == message
    assert re.fullmatch(r"prompt is too long: \d+ tokens > \d+ maximum", err.message)
    status, body, _ = error_response(err)
    assert (status, body["error"]["type"]) == (400, "invalid_request_error")


def test_context_overflow_leaves_other_errors() -> None:
    err = GatewayError(ErrorKind.RATE_LIMITED, "slow down")
    assert context_overflow(err, prompt_tokens=1, context_window=2) is err
