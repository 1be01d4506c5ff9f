"""Upstream error answers, with the real status, body and `x-amzn-errortype`
(docs/kiro-protocol.md §6).

Request validation errors (400) take the shape of real 2026 answers (docs/kiro-protocol.md §6.1):
`{"__type": "com.amazon.kiro.runtimeservice#ValidationException", "message", "reason"}` and no
`x-amzn-errortype` header.

`Rejection` is raised by the validators and the account checks and turned into an HTTP response
by `app.py`; nothing else in the emulator builds error responses.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

__all__ = [
    "BEARER_INVALID",
    "CONTENT_TOO_LONG",
    "HIGH_LOAD",
    "IMPROPER",
    "INVALID_MODEL",
    "PROFILE_ARN_REQUIRED",
    "QUOTA_EXHAUSTED",
    "SERVER_ERROR",
    "CREDIT_WINDOW",
    "SUSPENDED",
    "SUSPICIOUS",
    "THROTTLED",
    "USER_RATE",
    "UNAVAILABLE",
    "UNKNOWN_OPERATION",
    "VALIDATION_TYPE",
    "Rejection",
    "json_response",
]


class Rejection(Exception):
    """An HTTP error answer: status, JSON body and the AWS error type header."""

    def __init__(
        self,
        status: int,
        body: dict[str, Any],
        error_type: str | None = None,
        why: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {why or body.get('message') or body.get('error')}")
        self.status = status
        self.body = body
        self.error_type = error_type
        self.why = why
        self.headers = dict(headers or {})

    def because(self, why: str) -> Rejection:
        """The same answer, noting which rule fired (shown in the emulator's request log only)."""
        return Rejection(self.status, self.body, self.error_type, why, self.headers)

    def with_headers(self, headers: dict[str, str]) -> Rejection:
        """The same answer with these extra HTTP headers."""
        return Rejection(self.status, self.body, self.error_type, self.why, headers)

    def logged(self, entry: dict[str, Any], headers: dict[str, str]) -> Response:
        """The answer, with its status and the rule that fired noted in the request's log
        entry (reqlog.record)."""
        entry["status"], entry["rejected"] = self.status, self.why or str(self)
        return self.response(headers)

    def response(self, headers: dict[str, str] | None = None) -> Response:
        extra = {**self.headers, **(headers or {})}
        if self.error_type:
            extra["x-amzn-errortype"] = self.error_type
        return json_response(self.body, self.status, extra)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


# 403 on an expired, unknown or missing bearer token (kiro.rs, AIClient, 9router).
BEARER_INVALID = Rejection(
    403,
    {"message": "The bearer token included in the request is invalid.", "reason": None},
    "AccessDeniedException",
)
VALIDATION_TYPE = "com.amazon.kiro.runtimeservice#ValidationException"


def _validation(message: str, reason: str | None) -> Rejection:
    """A 400 as real Kiro sends it (§6.1): `__type` in the body, no x-amzn-errortype header."""
    return Rejection(400, {"__type": VALIDATION_TYPE, "message": message, "reason": reason})


# 400 for schema / alternation / size problems (kiro-gw, kiro.rs).
IMPROPER = _validation("Improperly formed request.", None)
INVALID_MODEL = _validation(
    "Invalid model. Please select a different model to continue.", "INVALID_MODEL_ID"
)
CONTENT_TOO_LONG = _validation("Input is too long.", "CONTENT_LENGTH_EXCEEDS_THRESHOLD")
# runtime.kiro.dev without profileArn (kiro-gw, §1.3); we require it for social accounts.
PROFILE_ARN_REQUIRED = _validation("profileArn is required for this request.", None)
QUOTA_EXHAUSTED = Rejection(
    402,
    {"message": "You have reached the limit.", "reason": "MONTHLY_REQUEST_COUNT"},
    "ServiceQuotaExceededException",
)
THROTTLED = Rejection(
    429,
    {
        "message": "I am experiencing high traffic, please try again shortly.",
        "reason": "INSUFFICIENT_MODEL_CAPACITY",
    },
    "ThrottlingException",
)
# The rate limits that name their cause (docs/kiro-protocol.md §6.2, §8): the texts users
# report; the reasons as reported (DAILY_REQUEST_COUNT) or named by the official model.
SUSPICIOUS = Rejection(
    429,
    {
        "message": (
            "Due to suspicious activity, we are imposing temporary limits on your account. "
            "Please try again later."
        ),
        "reason": None,
    },
    "ThrottlingException",
)
CREDIT_WINDOW = Rejection(
    429,
    {
        "message": "5-minute credit limit exceeded. Please wait before trying again.",
        "reason": "DAILY_REQUEST_COUNT",
    },
    "ThrottlingException",
)
USER_RATE = Rejection(
    429,
    {
        "message": "Too many requests, please wait before trying again.",
        "reason": "USER_REQUEST_RATE_EXCEEDED",
    },
    "ThrottlingException",
)
SUSPENDED = Rejection(
    403,
    {
        "message": (
            "Your User ID temporarily is suspended. We detected unusual activity and locked it "
            "as a security precaution. Contact support to restore access."
        ),
        "reason": "TEMPORARILY_SUSPENDED",
    },
    "AccessDeniedException",
)
# 500 with the body kiro.rs and AIClient quote (docs/kiro-protocol.md §6.2).
SERVER_ERROR = Rejection(
    500,
    {
        "message": "Encountered an unexpected error when processing the request, please try again.",
        "reason": None,
    },
    "InternalServerException",
)
UNAVAILABLE = Rejection(
    503,
    {
        "__type": "ServiceUnavailableException",
        "message": "The service is temporarily unavailable. Please try again later.",
    },
    "ServiceUnavailableException",
)
# q-cli's retry-classifier fixture: a bare `{"error": ...}` body (no error type is known).
HIGH_LOAD = Rejection(
    500,
    {"error": "Encountered unexpectedly high load when processing the request, please try again."},
)
# An AWS JSON-protocol service answers a POST / without a known x-amz-target like this.
UNKNOWN_OPERATION = Rejection(
    400,
    {"__type": "com.amazon.coral.service#UnknownOperationException", "message": None},
    "UnknownOperationException:http://internal.amazon.com/coral/com.amazon.coral.service/",
)
