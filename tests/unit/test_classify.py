"""kiro.classify: upstream HTTP errors and exception frames -> the error taxonomy.

Bodies are the real ones quoted in docs/kiro-protocol.md §6.1 and §6.2.
"""

from __future__ import annotations

import json

import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.kiro.classify import (
    classify_exception_frame,
    classify_http_error,
    is_bearer_invalid,
    json_answer,
)
from ki2api.kiro.stream.codec import Frame

BEARER = b'{"message":"The bearer token included in the request is invalid.","reason":null}'

# (id, status, body, headers, kind, retryable, substrings expected in the message)
HTTP_CASES: list[tuple[str, int, bytes, dict[str, str], ErrorKind, bool, tuple[str, ...]]] = [
    (
        "input-too-long",
        400,
        b'{"message":"Input is too long.","reason":"CONTENT_LENGTH_EXCEEDS_THRESHOLD"}',
        {},
        ErrorKind.CONTEXT_TOO_LONG,
        False,
        ("Input is too long.", "CONTENT_LENGTH_EXCEEDS_THRESHOLD"),
    ),
    (
        "content-length-threshold-wording",
        400,
        b'{"message":"Input content length exceeds threshold.","reason":null}',
        {},
        ErrorKind.CONTEXT_TOO_LONG,
        False,
        ("exceeds threshold",),
    ),
    (
        "improperly-formed",
        400,
        b'{"message":"Improperly formed request.","reason":null}',
        {},
        ErrorKind.UPSTREAM_REJECTED,
        False,
        ("Improperly formed request.",),
    ),
    (
        "request-body-invalid",
        400,
        b'{"message":"Bad body.","reason":"REQUEST_BODY_INVALID"}',
        {},
        ErrorKind.UPSTREAM_REJECTED,
        False,
        ("Bad body.", "REQUEST_BODY_INVALID"),
    ),
    (
        "invalid-model",
        400,
        b'{"message":"Invalid model. Please select a different model to continue.",'
        b'"reason":"INVALID_MODEL_ID"}',
        {},
        ErrorKind.MODEL_NOT_FOUND,
        False,
        ("does not offer", "Invalid model."),
    ),
    (
        "profile-arn-required-plain-text",
        400,
        b"profileArn is required",
        {},
        ErrorKind.UPSTREAM_REJECTED,
        False,
        ("profileArn is required",),
    ),
    (
        "monthly-400-throttling-q-cli",
        400,
        b'{"__type":"ThrottlingException","message":"Maximum Request reached for this month.",'
        b'"reason":"MONTHLY_REQUEST_COUNT"}',
        {},
        ErrorKind.QUOTA_EXHAUSTED,
        False,
        ("monthly", "Maximum Request reached for this month."),
    ),
    (
        "monthly-402",
        402,
        b'{"message":"You have reached the limit.","reason":"MONTHLY_REQUEST_COUNT"}',
        {},
        ErrorKind.QUOTA_EXHAUSTED,
        False,
        ("You have reached the limit.",),
    ),
    ("402-empty-body", 402, b"", {}, ErrorKind.QUOTA_EXHAUSTED, False, ()),
    (
        "monthly-429",
        429,
        b'{"message":"x","reason":"MONTHLY_REQUEST_COUNT"}',
        {},
        ErrorKind.QUOTA_EXHAUSTED,
        False,
        (),
    ),
    ("bearer-403", 403, BEARER, {}, ErrorKind.UPSTREAM_AUTH, False, ("bearer token",)),
    ("bearer-401", 401, BEARER, {}, ErrorKind.UPSTREAM_AUTH, False, ("bearer token",)),
    ("401-other", 401, b"", {}, ErrorKind.UPSTREAM_AUTH, False, ()),
    (
        "suspended-reason",
        403,
        b'{"message":"Your account is temporarily suspended.","reason":"TEMPORARILY_SUSPENDED"}',
        {},
        ErrorKind.PERMISSION,
        False,
        ("suspended", "TEMPORARILY_SUSPENDED"),
    ),
    (
        "locked-wording",
        403,
        b'{"message":"We detected unusual activity and locked it as a security precaution."}',
        {},
        ErrorKind.PERMISSION,
        False,
        ("suspended or restricted", "security precaution"),
    ),
    (
        "restricted-wording",
        403,
        b"AWS has restricted your ability to use kiro",
        {},
        ErrorKind.PERMISSION,
        False,
        ("restricted your ability",),
    ),
    (
        "403-other",
        403,
        b'{"message":"Feature not supported.","reason":"FEATURE_NOT_SUPPORTED"}',
        {},
        ErrorKind.PERMISSION,
        False,
        ("Feature not supported.",),
    ),
    (
        "429-capacity",
        429,
        b'{"message":"I am experiencing high traffic, please try again shortly.",'
        b'"reason":"INSUFFICIENT_MODEL_CAPACITY"}',
        {},
        ErrorKind.RATE_LIMITED,
        True,
        ("high traffic",),
    ),
    (  # a size error that arrives as a 429 (docs/kiro-protocol.md): not a throttle
        "429-input-too-long",
        429,
        b'{"message":"Input is too long."}',
        {},
        ErrorKind.CONTEXT_TOO_LONG,
        False,
        ("too long",),
    ),
    (  # real 400s: `__type` with the service namespace, no x-amzn-errortype header
        "400-image-to-text-only-model",
        400,
        b'{"__type":"com.amazon.kiro.runtimeservice#ValidationException",'
        b'"message":"Bedrock error message: This model doesn\'t support the image content '
        b'block that you provided. Try again with a model that supports image input.",'
        b'"reason":"IMAGE_FORMAT_UNSUPPORTED"}',
        {},
        ErrorKind.INVALID_REQUEST,
        False,
        ("does not accept images", "IMAGE_FORMAT_UNSUPPORTED"),
    ),
    (
        "400-namespaced-validation",
        400,
        b'{"__type":"com.amazon.kiro.runtimeservice#ValidationException",'
        b'"message":"Improperly formed request.","reason":null}',
        {},
        ErrorKind.UPSTREAM_REJECTED,
        False,
        ("rejected", "Improperly formed request."),
    ),
    (
        "429-suspicious",
        429,
        b"Due to suspicious activity, we are imposing temporary limits",
        {"Retry-After": "12"},
        ErrorKind.RATE_LIMITED,
        True,
        ("suspicious activity",),
    ),
    (
        "500-high-load-q-cli",
        500,
        b'{"error": "Encountered unexpectedly high load when processing the request, '
        b'please try again."}',
        {},
        ErrorKind.UPSTREAM_UNAVAILABLE,
        True,
        ("unexpectedly high load",),
    ),
    (
        "500-service-unavailable",
        500,
        b'{"__type":"ServiceUnavailableException","message":"The service is temporarily '
        b'unavailable. Please try again later."}',
        {},
        ErrorKind.UPSTREAM_UNAVAILABLE,
        True,
        ("temporarily unavailable",),
    ),
    (
        "500-unexpected-error",
        500,
        b"Encountered an unexpected error when processing the request, please try again.",
        {},
        ErrorKind.UPSTREAM_UNAVAILABLE,
        True,
        ("unexpected error",),
    ),
    ("503-empty", 503, b"", {}, ErrorKind.UPSTREAM_UNAVAILABLE, True, ()),
    ("502-html", 502, b"<html>Bad Gateway</html>", {}, ErrorKind.UPSTREAM_UNAVAILABLE, True, ()),
    ("408", 408, b"", {}, ErrorKind.UPSTREAM_TIMEOUT, True, ()),
    ("504", 504, b"gateway timeout", {}, ErrorKind.UPSTREAM_TIMEOUT, True, ()),
    ("404-other", 404, b'{"message":"Not found"}', {}, ErrorKind.UPSTREAM_ERROR, False, ()),
    (
        "binary-garbage",
        418,
        bytes(range(256)),
        {},
        ErrorKind.UPSTREAM_ERROR,
        False,
        (),
    ),
    ("json-array-body", 400, b"[1, 2]", {}, ErrorKind.UPSTREAM_REJECTED, False, ()),
    ("json-null-fields", 400, b'{"message":null}', {}, ErrorKind.UPSTREAM_REJECTED, False, ()),
]


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "retryable", "substrings"),
    [c[1:] for c in HTTP_CASES],
    ids=[c[0] for c in HTTP_CASES],
)
def test_classify_http_error(
    status: int,
    body: bytes,
    headers: dict[str, str],
    kind: ErrorKind,
    retryable: bool,
    substrings: tuple[str, ...],
) -> None:
    err = classify_http_error(status, body, headers)
    assert isinstance(err, GatewayError)
    assert err.kind is kind
    assert err.retryable is retryable
    assert err.upstream_status == status
    for s in substrings:
        assert s.lower() in err.message.lower()
    assert len(err.message) < 500


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "12"}, 12.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({"retry-after": "-3"}, None),
    ],
    ids=["absent", "seconds", "case-insensitive-float", "http-date", "negative"],
)
def test_rate_limit_retry_after(headers: dict[str, str], expected: float | None) -> None:
    err = classify_http_error(429, b"", headers)
    assert err.kind is ErrorKind.RATE_LIMITED
    assert err.retry_after == expected


def test_only_rate_limits_carry_retry_after() -> None:
    assert classify_http_error(503, b"", {"retry-after": "9"}).retry_after is None


def test_error_type_header_counts_as_service_unavailable() -> None:
    err = classify_http_error(
        500, b"{}", {"x-amzn-errortype": "ServiceUnavailableException:http://internal"}
    )
    assert err.kind is ErrorKind.UPSTREAM_UNAVAILABLE


def test_long_upstream_message_is_clipped() -> None:
    body = json.dumps({"message": "x" * 5000}).encode()
    assert len(classify_http_error(400, body, {}).message) < 400


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (403, BEARER, True),
        (401, BEARER, True),
        (403, BEARER.upper(), True),
        (400, BEARER, False),
        (403, b'{"reason":"TEMPORARILY_SUSPENDED"}', False),
        (401, b"", False),
        (403, b"\xff\xfe", False),
    ],
    ids=["403", "401", "case", "400", "suspended", "empty", "garbage"],
)
def test_is_bearer_invalid(status: int, body: bytes, expected: bool) -> None:
    assert is_bearer_invalid(status, body) is expected


def _exc(exc_type: str, payload: dict[str, object] | None = None) -> Frame:
    return Frame(
        headers={":exception-type": exc_type, ":message-type": "exception"},
        payload=json.dumps(payload or {"message": f"{exc_type} happened"}).encode(),
    )


# (id, frame, kind, retryable)
FRAME_CASES: list[tuple[str, Frame, ErrorKind, bool]] = [
    ("throttling", _exc("ThrottlingException"), ErrorKind.RATE_LIMITED, True),
    (
        "throttling-monthly",
        _exc("ThrottlingException", {"message": "m", "reason": "MONTHLY_REQUEST_COUNT"}),
        ErrorKind.QUOTA_EXHAUSTED,
        False,
    ),
    ("quota", _exc("ServiceQuotaExceededException"), ErrorKind.QUOTA_EXHAUSTED, False),
    ("internal", _exc("InternalServerException"), ErrorKind.UPSTREAM_UNAVAILABLE, True),
    ("unavailable", _exc("ServiceUnavailableException"), ErrorKind.UPSTREAM_UNAVAILABLE, True),
    (
        "model-unavailable",
        _exc("ModelTemporarilyUnavailableException"),
        ErrorKind.UPSTREAM_UNAVAILABLE,
        True,
    ),
    ("validation", _exc("ValidationException"), ErrorKind.UPSTREAM_REJECTED, False),
    (
        "validation-too-long",
        _exc("ValidationException", {"reason": "CONTENT_LENGTH_EXCEEDS_THRESHOLD"}),
        ErrorKind.CONTEXT_TOO_LONG,
        False,
    ),
    ("access-denied", _exc("AccessDeniedException"), ErrorKind.PERMISSION, False),
    ("unknown", _exc("SomethingNewException"), ErrorKind.UPSTREAM_ERROR, False),
    (
        "garbage-payload",
        Frame(headers={":message-type": "exception", ":exception-type": "X"}, payload=b"\x00{"),
        ErrorKind.UPSTREAM_ERROR,
        False,
    ),
    (
        "error-frame-headers",
        Frame(
            headers={
                ":message-type": "error",
                ":error-code": "ThrottlingException",
                ":error-message": "Rate exceeded",
            },
            payload=b"",
        ),
        ErrorKind.RATE_LIMITED,
        True,
    ),
    (
        "error-frame-no-code",
        Frame(headers={":message-type": "error"}, payload=b""),
        ErrorKind.UPSTREAM_ERROR,
        False,
    ),
]


@pytest.mark.parametrize(
    ("frame", "kind", "retryable"),
    [c[1:] for c in FRAME_CASES],
    ids=[c[0] for c in FRAME_CASES],
)
def test_classify_exception_frame(frame: Frame, kind: ErrorKind, retryable: bool) -> None:
    err = classify_exception_frame(frame)
    assert isinstance(err, GatewayError)
    assert err.kind is kind
    assert err.retryable is retryable


def test_exception_frame_message_is_included() -> None:
    err = classify_exception_frame(_exc("ThrottlingException", {"message": "Too many requests"}))
    assert isinstance(err, GatewayError)
    assert "Too many requests" in err.message


def test_error_frame_message_header_is_included() -> None:
    frame = Frame(
        headers={":message-type": "error", ":error-code": "X", ":error-message": "boom happened"},
        payload=b"",
    )
    err = classify_exception_frame(frame)
    assert isinstance(err, GatewayError)
    assert "boom happened" in err.message


@pytest.mark.parametrize(
    "frame",
    [
        _exc("ContentLengthExceededException", {"message": "Response too long"}),
        Frame(
            headers={":message-type": "error", ":error-code": "ContentLengthExceededException"},
            payload=b"",
        ),
    ],
    ids=["exception", "error"],
)
def test_content_length_exceeded_is_max_tokens(frame: Frame) -> None:
    assert classify_exception_frame(frame) == "max_tokens"


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (403, b'{"message":"x","reason":"TEMPORARILY_SUSPENDED"}', "account_suspended"),
        (403, b'{"message":"We locked it as a security precaution."}', "account_suspended"),
        (403, b'{"message":"Feature not supported","reason":"FEATURE_NOT_SUPPORTED"}', None),
        (403, b'{"message":"The bearer token included in the request is invalid."}', None),
        (429, b'{"message":"slow down"}', None),
    ],
    ids=["suspended-reason", "locked-text", "feature", "bearer", "throttled"],
)
def test_suspension_carries_the_code_the_pool_disables_on(
    status: int, body: bytes, code: str | None
) -> None:
    assert classify_http_error(status, body, {}).code == code


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (200, b'{"a": 1}', None),
        (200, b"[1, 2]", ErrorKind.UPSTREAM_PROTOCOL),
        (200, b"<html>", ErrorKind.UPSTREAM_PROTOCOL),
        (200, b"", ErrorKind.UPSTREAM_PROTOCOL),
        (429, b'{"message": "slow down"}', ErrorKind.RATE_LIMITED),
        (403, b'{"message":"The bearer token included in the request is invalid."}', None),
    ],
    ids=["object", "list", "html", "empty", "429", "403-bearer"],
)
def test_json_answer(status: int, body: bytes, kind: ErrorKind | None) -> None:
    if status == 200 and kind is None:
        assert json_answer(status, body, {}, "Kiro X") == {"a": 1}
        return
    with pytest.raises(GatewayError) as info:
        json_answer(status, body, {}, "Kiro X")
    if kind is ErrorKind.UPSTREAM_PROTOCOL:
        assert "Kiro X did not answer with a JSON object" in info.value.message
    assert info.value.kind is (kind or ErrorKind.UPSTREAM_AUTH)
