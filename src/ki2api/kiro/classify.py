"""Upstream failures -> `GatewayError`: a pure table, no I/O.

Two inputs reach here (docs/kiro-protocol.md §6, §5.9):

* an HTTP error answer before the stream starts: `classify_http_error(status, body, headers)`;
  bodies are JSON (`{"message", "reason", "__type"}`), plain text or empty, and any bytes are
  accepted without raising;
* an `exception` / `error` frame in the middle of a stream: `classify_exception_frame(frame)`.
  `ContentLengthExceededException` is not a failure: the answer was cut at the output limit, so
  the caller ends the stream normally with stop reason ``"max_tokens"``.

Matching is by substring of the raw body as well as by the parsed fields, because the real
bodies disagree with the official model (`...Exception` vs `...Error`; the monthly limit comes
as 402 or as a 400 `ThrottlingException`). `MONTHLY_REQUEST_COUNT` wins over the status code: a
quota is never retryable.

Some 429s say more than "slow down" (docs/kiro-protocol.md §6.2, §8), and carry a `code` the
pool acts on (docs/accounts.md, "Trouble signs"): `SUSPICIOUS_CODE` (the account is under
watch: a long rest), `CREDIT_WINDOW_CODE` ("5-minute credit limit exceeded", reason
`DAILY_REQUEST_COUNT`) and `USER_RATE_CODE` (`USER_REQUEST_RATE_EXCEEDED`): rests until the
window ends. A 429 saying "Input is too long." stays a size error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ki2api.core.errors import ErrorKind, GatewayError

__all__ = [
    "CREDIT_WINDOW_CODE",
    "LOCATION_BLOCK_CODE",
    "SUSPENDED_CODE",
    "SUSPICIOUS_CODE",
    "USER_RATE_CODE",
    "json_answer",
    "classify_exception_frame",
    "classify_http_error",
    "is_bearer_invalid",
]

SUSPENDED_CODE = "account_suspended"  # the pool disables an account that gets this
SUSPICIOUS_CODE = "suspicious_activity"  # a 429 about suspicious activity: a long rest
CREDIT_WINDOW_CODE = "credit_window"  # "5-minute credit limit exceeded": rest to the window's end
USER_RATE_CODE = "user_rate"  # USER_REQUEST_RATE_EXCEEDED: a short rest
# INVALID_MODEL_ID for a Claude model the account should have: likely a location block
# (docs/kiro-protocol.md §8); the pool decides (kiro/accounts/trouble.py), not this table
LOCATION_BLOCK_CODE = "location_block"
_MAX_DETAIL_CHARS = 300
_BEARER_INVALID = "bearer token included in the request is invalid"
_TOO_LONG_MARKERS = (
    "content_length_exceeds_threshold",
    "input is too long",
    "content length exceeds threshold",
)
_HIGH_LOAD_MARKERS = ("unexpectedly high load", "serviceunavailableexception")
_MONTHLY_TEXT = "The Kiro account's monthly request limit is reached"
_SUSPENDED_MARKERS = ("temporarily_suspended", "locked", "suspended", "restricted your ability")
# What a rate limit says of itself (matched in the lower-cased body, its reason and type): the
# first that matches names it. Spaces, `_` and `-` are alike ("suspicious_activity").
_RATE_SIGNS: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (
        re.compile(r"suspicious[\s_-]*activit"),
        SUSPICIOUS_CODE,
        "Kiro limits this account for suspicious activity",
    ),
    (
        re.compile(r"daily_request_count|credit[\s_-]*limit[\s_-]*exceeded"),
        CREDIT_WINDOW_CODE,
        "Kiro's 5-minute credit limit of this account is reached",
    ),
    (
        re.compile(r"user[\s_-]*request[\s_-]*rate[\s_-]*exceeded"),
        USER_RATE_CODE,
        "Kiro's per-user request rate of this account is exceeded",
    ),
)


@dataclass(frozen=True, slots=True)
class _Detail:
    """What an upstream error says about itself, whatever shape the body had."""

    message: str | None
    reason: str | None
    type: str | None
    raw: str  # lower-cased decoded body, for substring matching

    def suffix(self) -> str:
        parts = [p for p in (self.message, self.reason and f"reason {self.reason}") if p]
        return f" (upstream: {'; '.join(parts)})" if parts else ""


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL_CHARS else text[: _MAX_DETAIL_CHARS - 1] + "…"


def _str_field(obj: Mapping[str, object], *names: str) -> str | None:
    for name in names:
        value = obj.get(name)
        if isinstance(value, str) and value.strip():
            return _clip(value)
    return None


def _parse_body(body: bytes, header_type: str | None = None) -> _Detail:
    """Read message/reason/type from any body; a type given by a header wins over `__type`."""
    text = body.decode("utf-8", errors="replace")
    try:
        obj = json.loads(text) if text.strip() else None
    except ValueError:
        obj = None
    raw = text.lower() + (" " + header_type.lower() if header_type else "")
    if isinstance(obj, dict):
        body_type = _str_field(obj, "__type", "code")
        raw_type = header_type or (body_type.rsplit("#", 1)[-1] if body_type else None)
        return _Detail(
            message=_str_field(obj, "message", "Message", "error"),
            reason=_str_field(obj, "reason"),
            type=raw_type,
            raw=raw,
        )
    plain = _clip(text) if text.strip() else None
    return _Detail(message=plain, reason=None, type=header_type, raw=raw)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Kiro's own `Retry-After` in seconds; None when absent or unreadable (the pool's
    cooldown then decides, and the frontends fall back to their default)."""
    value = _header(headers, "retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def is_bearer_invalid(status: int, body: bytes) -> bool:
    """Kiro refused the access token itself (refreshing it may help)."""
    return status in (401, 403) and _BEARER_INVALID in body.decode("utf-8", "replace").lower()


def _has(detail: _Detail, markers: tuple[str, ...]) -> bool:
    return any(m in detail.raw for m in markers)


def _rate_sign(d: _Detail) -> tuple[str, str] | None:
    """(code, text) of a rate limit that names its cause, or None for a plain throttle."""
    where = f"{d.raw} {(d.reason or '').lower()}"
    for pattern, code, text in _RATE_SIGNS:
        if pattern.search(where):
            return code, text
    return None


def _classify_400(d: _Detail) -> tuple[ErrorKind, str]:
    if _has(d, _TOO_LONG_MARKERS):
        return ErrorKind.CONTEXT_TOO_LONG, "The conversation is too long for the model's context"
    if "image_format_unsupported" in d.raw:
        return ErrorKind.INVALID_REQUEST, "The model does not accept images; send text only"
    if "invalid_model_id" in d.raw:
        return (
            ErrorKind.MODEL_NOT_FOUND,
            "Kiro does not offer the requested model to this account or region",
        )
    return ErrorKind.UPSTREAM_REJECTED, "Kiro rejected the request"


def _classify_4xx(status: int, d: _Detail, bearer_invalid: bool) -> tuple[ErrorKind, str] | None:
    if status == 400 or (status == 429 and _has(d, _TOO_LONG_MARKERS)):
        return _classify_400(d)  # a 429 saying "Input is too long." is a size error
    if status == 401 or bearer_invalid:
        return ErrorKind.UPSTREAM_AUTH, "Kiro refused the access token"
    if status == 403:
        if _has(d, _SUSPENDED_MARKERS):
            return ErrorKind.PERMISSION, "The Kiro account is suspended or restricted"
        return ErrorKind.PERMISSION, "Kiro denied access"
    return None


def classify_http_error(status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
    """Map an upstream HTTP error answer (status >= 400) to the taxonomy."""
    error_type = _header(headers, "x-amzn-errortype")
    d = _parse_body(body, error_type.split(":", 1)[0] if error_type else None)
    retry_after: float | None = None
    code: str | None = None
    if status == 402 or "monthly_request_count" in d.raw:
        kind, text = ErrorKind.QUOTA_EXHAUSTED, _MONTHLY_TEXT
    elif (found := _classify_4xx(status, d, is_bearer_invalid(status, body))) is not None:
        kind, text = found
    elif status == 429:
        kind, text = ErrorKind.RATE_LIMITED, "Kiro is rate limiting this account"
        code, text = _rate_sign(d) or (None, text)
        retry_after = _retry_after(headers)
    elif status in (408, 504):
        kind, text = ErrorKind.UPSTREAM_TIMEOUT, "Kiro did not answer in time"
    elif status == 503 or (status == 500 and _has(d, _HIGH_LOAD_MARKERS)):
        kind, text = ErrorKind.UPSTREAM_UNAVAILABLE, "Kiro is overloaded or unavailable"
    elif 500 <= status <= 599:
        kind, text = ErrorKind.UPSTREAM_UNAVAILABLE, f"Kiro failed with HTTP {status}"
    else:
        kind, text = ErrorKind.UPSTREAM_ERROR, f"Kiro answered HTTP {status}"
    retryable = kind in _RETRYABLE
    suspended = kind is ErrorKind.PERMISSION and _has(d, _SUSPENDED_MARKERS)
    return GatewayError(
        kind,
        text + d.suffix(),
        retryable=retryable,
        upstream_status=status,
        retry_after=retry_after,
        code=SUSPENDED_CODE if suspended else code,
    )


_RETRYABLE = frozenset(
    {ErrorKind.RATE_LIMITED, ErrorKind.UPSTREAM_UNAVAILABLE, ErrorKind.UPSTREAM_TIMEOUT}
)

# (substring of the lower-cased exception type, kind, message): first match wins.
_FRAME_TABLE: tuple[tuple[str, ErrorKind, str], ...] = (
    ("servicequotaexceeded", ErrorKind.QUOTA_EXHAUSTED, "The Kiro account's quota is exhausted"),
    ("throttling", ErrorKind.RATE_LIMITED, "Kiro is rate limiting this account"),
    ("internalserver", ErrorKind.UPSTREAM_UNAVAILABLE, "Kiro failed while answering"),
    ("serviceunavailable", ErrorKind.UPSTREAM_UNAVAILABLE, "Kiro is overloaded or unavailable"),
    (
        "modeltemporarilyunavailable",
        ErrorKind.UPSTREAM_UNAVAILABLE,
        "The model is temporarily unavailable",
    ),
    ("validation", ErrorKind.UPSTREAM_REJECTED, "Kiro rejected the request"),
    ("accessdenied", ErrorKind.PERMISSION, "Kiro denied access"),
)


class Frame(Protocol):
    """What classification reads of a decoded frame (`kiro.stream.codec.Frame` has it), so this
    module, which the stream layer uses, does not import the stream layer."""

    @property
    def headers(self) -> Mapping[str, object]: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def message_type(self) -> str: ...
    @property
    def exception_type(self) -> str | None: ...


def _frame_detail(frame: Frame) -> _Detail:
    if frame.message_type == "error":
        code = frame.headers.get(":error-code")
        message = frame.headers.get(":error-message")
        d = _parse_body(frame.payload, code if isinstance(code, str) else None)
        if isinstance(message, str) and message.strip():
            d = _Detail(_clip(message), d.reason, d.type, d.raw + " " + message.lower())
        return d
    return _parse_body(frame.payload, frame.exception_type)


def _frame_kind(exc_type: str, d: _Detail) -> tuple[ErrorKind, str]:
    if "monthly_request_count" in d.raw or "monthly_request_count" in exc_type:
        return ErrorKind.QUOTA_EXHAUSTED, _MONTHLY_TEXT
    if "model_temporarily_unavailable" in d.raw:
        return ErrorKind.UPSTREAM_UNAVAILABLE, "The model is temporarily unavailable"
    if "validation" in exc_type and _has(d, _TOO_LONG_MARKERS):
        return ErrorKind.CONTEXT_TOO_LONG, "The conversation is too long for the model's context"
    for marker, kind, text in _FRAME_TABLE:
        if marker in exc_type:
            return kind, text
    return ErrorKind.UPSTREAM_ERROR, "Kiro reported an error in the stream"


def classify_exception_frame(frame: Frame) -> GatewayError | Literal["max_tokens"]:
    """An `exception` or `error` frame -> the error to raise, or ``"max_tokens"``."""
    d = _frame_detail(frame)
    exc_type = (d.type or "").lower()
    if "contentlengthexceeded" in exc_type:
        return "max_tokens"
    kind, text = _frame_kind(exc_type, d)
    sign = _rate_sign(d) if kind is ErrorKind.RATE_LIMITED else None
    code, text = sign or (None, text)
    label = f" [{d.type}]" if d.type else ""
    # status 200: the HTTP status of the stream that carried it. An exception frame is an
    # answer Kiro chose to give (like an HTTP error), so the same one from two accounts makes
    # the request the cause (kiro/pool_policy.same_answer).
    return GatewayError(
        kind,
        text + label + d.suffix(),
        retryable=kind in _RETRYABLE,
        upstream_status=200,
        code=code,
    )


def json_answer(
    status: int, body: bytes, headers: Mapping[str, str], what: str
) -> Mapping[str, Any]:
    """The JSON object a Kiro service call answered (`what`: "Kiro getUsageLimits", ...); an
    HTTP error as `classify_http_error` names it; anything else UPSTREAM_PROTOCOL."""
    if status >= 400:
        raise classify_http_error(status, body, headers)
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if not isinstance(parsed, Mapping):
        raise GatewayError(ErrorKind.UPSTREAM_PROTOCOL, f"{what} did not answer with a JSON object")
    return parsed
