"""error_response: one row per ErrorKind (status, type, code, headers), always four keys."""

from __future__ import annotations

import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.frontends.openai.error_json import error_response, stream_error_body

K = ErrorKind
# kind: (status, type, code when the error sets none, param when the error sets none)
EXPECTED: dict[ErrorKind, tuple[int, str, str | None, str | None]] = {
    K.INVALID_REQUEST: (400, "invalid_request_error", None, None),
    K.REQUEST_TOO_LARGE: (413, "invalid_request_error", "request_too_large", None),
    K.AUTHENTICATION: (401, "invalid_request_error", "invalid_api_key", None),
    K.NOT_FOUND: (404, "invalid_request_error", None, None),
    K.MODEL_NOT_FOUND: (404, "invalid_request_error", "model_not_found", "model"),
    K.CONTEXT_TOO_LONG: (400, "invalid_request_error", "context_length_exceeded", "messages"),
    K.UPSTREAM_AUTH: (401, "authentication_error", "upstream_auth", None),
    K.NO_CREDENTIALS: (503, "server_error", "no_credentials", None),
    K.PERMISSION: (403, "permission_error", "permission_denied", None),
    K.RATE_LIMITED: (429, "requests", "rate_limit_exceeded", None),
    K.QUOTA_EXHAUSTED: (429, "insufficient_quota", "insufficient_quota", None),
    K.UPSTREAM_REJECTED: (400, "invalid_request_error", "upstream_rejected", None),
    K.UPSTREAM_UNAVAILABLE: (503, "server_error", "upstream_unavailable", None),
    K.UPSTREAM_TIMEOUT: (504, "server_error", "upstream_timeout", None),
    K.UPSTREAM_PROTOCOL: (502, "server_error", "upstream_protocol_error", None),
    K.UPSTREAM_ERROR: (502, "server_error", "upstream_error", None),
    K.CANCELLED: (499, "invalid_request_error", "request_cancelled", None),
    K.INTERNAL: (500, "server_error", None, None),
}


def test_every_kind_has_a_row() -> None:
    assert set(EXPECTED) == set(ErrorKind)


@pytest.mark.parametrize("kind", list(ErrorKind), ids=[k.value for k in ErrorKind])
def test_status_type_code(kind: ErrorKind) -> None:
    status, body, _ = error_response(GatewayError(kind, "what happened"))
    exp_status, exp_type, exp_code, exp_param = EXPECTED[kind]
    assert status == exp_status
    assert body == {
        "error": {
            "message": "what happened" if kind is not K.INTERNAL else body["error"]["message"],
            "type": exp_type,
            "param": exp_param,
            "code": exp_code,
        }
    }
    assert stream_error_body(GatewayError(kind, "what happened")) == body


@pytest.mark.parametrize("kind", [k for k in ErrorKind if k is not K.INTERNAL])
def test_error_param_and_code_win_over_the_defaults(kind: ErrorKind) -> None:
    _, body, _ = error_response(GatewayError(kind, "m", param="messages.3.role", code="c"))
    assert body["error"]["param"] == "messages.3.role"
    assert body["error"]["code"] == "c"


def test_internal_never_shows_its_message() -> None:
    err = GatewayError(K.INTERNAL, "KeyError: 'x' in /src/secret.py", param="p", code="c")
    _, body, headers = error_response(err)
    assert "secret" not in body["error"]["message"]
    assert body["error"]["message"]
    assert body["error"]["param"] is None and body["error"]["code"] is None
    assert headers == {}


@pytest.mark.parametrize(
    ("kind", "retry_after", "expected"),
    [
        (K.RATE_LIMITED, 2.0, {"retry-after": "2", "retry-after-ms": "2000"}),
        (K.RATE_LIMITED, 0.2, {"retry-after": "1", "retry-after-ms": "200"}),
        (K.RATE_LIMITED, 2.5, {"retry-after": "3", "retry-after-ms": "2500"}),
        (K.RATE_LIMITED, None, {"retry-after": "1", "retry-after-ms": "1000"}),
        (K.RATE_LIMITED, float("inf"), {}),
        (K.QUOTA_EXHAUSTED, None, {"x-should-retry": "false"}),
        (K.AUTHENTICATION, None, {"x-should-retry": "false"}),
        (  # all accounts dry: when the first one resets, and "do not retry now"
            K.QUOTA_EXHAUSTED,
            30.0,
            {"retry-after": "30", "retry-after-ms": "30000", "x-should-retry": "false"},
        ),
        (K.UPSTREAM_UNAVAILABLE, 5.0, {"retry-after": "5", "retry-after-ms": "5000"}),
        (K.UPSTREAM_UNAVAILABLE, None, {}),
        (K.UPSTREAM_ERROR, 5.0, {}),
        (K.INVALID_REQUEST, 5.0, {}),
    ],
    ids=[
        "rate-2s",
        "rate-sub-second-rounds-up",
        "rate-fraction",
        "rate-unknown-default",
        "rate-infinite-ignored",
        "quota",
        "wrong-client-key",
        "quota-with-retry-after",
        "unavailable-known",
        "unavailable-unknown",
        "upstream-error-no-header",
        "invalid-no-header",
    ],
)
def test_headers(kind: ErrorKind, retry_after: float | None, expected: dict[str, str]) -> None:
    _, _, headers = error_response(GatewayError(kind, "m", retry_after=retry_after))
    assert headers == expected
