"""The one error taxonomy.

Errors are created at three edges only: `transport` (network exceptions), `kiro.classify`
(upstream status, body, exception frames) and the frontends' request validation. Only
`frontends/*/errors.py` turns a `GatewayError` into what a client sees.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ErrorKind", "GatewayError", "NetworkFailure", "network_error"]


class ErrorKind(StrEnum):
    INVALID_REQUEST = "invalid_request"  # the client's request is wrong (400)
    REQUEST_TOO_LARGE = "request_too_large"  # body over the configured limit (413)
    AUTHENTICATION = "authentication"  # the client's key is missing or wrong (401)
    NOT_FOUND = "not_found"  # unknown path or resource (404)
    MODEL_NOT_FOUND = "model_not_found"  # unknown model name (404)
    CONTEXT_TOO_LONG = "context_too_long"  # upstream CONTENT_LENGTH_EXCEEDS_THRESHOLD (400)
    UPSTREAM_AUTH = "upstream_auth"  # Kiro refused our token, and refresh did not help (401)
    NO_CREDENTIALS = "no_credentials"  # no usable Kiro login (503)
    PERMISSION = "permission"  # account suspended / feature not allowed (403)
    RATE_LIMITED = "rate_limited"  # upstream throttling (429, retryable)
    QUOTA_EXHAUSTED = "quota_exhausted"  # monthly limit reached (429, not retryable)
    UPSTREAM_REJECTED = "upstream_rejected"  # upstream 400 we could not prevent (502)
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"  # upstream 5xx / overloaded (503)
    UPSTREAM_TIMEOUT = "upstream_timeout"  # no answer in time (504)
    UPSTREAM_PROTOCOL = "upstream_protocol"  # corrupt frames, truncated stream (502)
    UPSTREAM_ERROR = "upstream_error"  # anything else from upstream (502)
    CANCELLED = "cancelled"  # the client went away
    INTERNAL = "internal"  # a bug of ours (500)


class GatewayError(Exception):
    """An error with a kind from the taxonomy; safe to show (never carries a secret)."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        retryable: bool = False,
        upstream_status: int | None = None,
        retry_after: float | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = retryable
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        self.param = param
        self.code = code

    def __repr__(self) -> str:
        return f"GatewayError({self.kind.value!r}, {self.message!r})"


class NetworkFailure(StrEnum):
    """How an HTTP call failed below HTTP: each client library's mapper sorts its exceptions
    into these, and `network_error` words them the same way for every library."""

    NO_CONNECTION = "no_connection"  # refused, or not made in time
    NO_ANSWER = "no_answer"  # connected, the answer did not come in time
    BROKEN = "broken"  # the connection broke off
    OTHER = "other"


_NETWORK: dict[NetworkFailure, tuple[ErrorKind, str, bool]] = {
    NetworkFailure.NO_CONNECTION: (ErrorKind.UPSTREAM_UNAVAILABLE, "could not connect to {}", True),
    NetworkFailure.NO_ANSWER: (ErrorKind.UPSTREAM_TIMEOUT, "{} did not answer in time", True),
    NetworkFailure.BROKEN: (ErrorKind.UPSTREAM_PROTOCOL, "the connection to {} broke off", True),
    NetworkFailure.OTHER: (ErrorKind.UPSTREAM_ERROR, "{} request failed", False),
}


def network_error(failure: NetworkFailure, what: str, exc: BaseException) -> GatewayError:
    """The error for a network failure talking to `what` (a service's name, never a URL, a
    token or an upstream body); the exception's class name is all that is kept of it."""
    kind, text, retryable = _NETWORK[failure]
    return GatewayError(kind, f"{text.format(what)} ({type(exc).__name__})", retryable=retryable)
