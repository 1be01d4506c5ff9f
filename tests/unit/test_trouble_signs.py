"""Trouble signs (issue 13, part C), table-driven: how kiro/classify.py names the 429s that say
more than "slow down", what the pool policy does with them, when an INVALID_MODEL_ID is a likely
location block, and how a warning and a suspension are shown (kiro/accounts/trouble.py)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.kiro.accounts.policy import (
    STUCK_THROTTLE,
    Failure,
    PolicyConfig,
    Strikes,
    failure_action,
)
from ki2api.kiro.accounts.trouble import (
    RING_SIZE,
    Trouble,
    describe_suspension,
    is_claude,
    trouble_view,
)
from ki2api.kiro.classify import (
    CREDIT_WINDOW_CODE,
    LOCATION_BLOCK_CODE,
    SUSPENDED_CODE,
    SUSPICIOUS_CODE,
    USER_RATE_CODE,
    classify_exception_frame,
    classify_http_error,
)
from ki2api.state.base import Health

NOW = 1_800_000_000.0
THROTTLE = {"x-amzn-errortype": "ThrottlingException"}

# --- classify ------------------------------------------------------------------------------------

# (id, status, body, headers, kind, code, retry_after)
CLASSIFY_CASES: list[tuple[str, int, bytes, dict[str, str], ErrorKind, str | None, Any]] = [
    (
        "suspicious-text",
        429,
        b'{"message":"Due to suspicious activity, we are imposing temporary limits on your '
        b'account. Please try again later.","reason":null}',
        THROTTLE,
        ErrorKind.RATE_LIMITED,
        SUSPICIOUS_CODE,
        None,
    ),
    (
        "suspicious-plain-upper-case",
        429,
        b"DUE TO SUSPICIOUS   ACTIVITY, WE ARE IMPOSING TEMPORARY LIMITS",
        {"Retry-After": "12"},
        ErrorKind.RATE_LIMITED,
        SUSPICIOUS_CODE,
        12.0,
    ),
    (
        "suspicious-reason-only",
        429,
        b'{"message":"Too many requests","reason":"SUSPICIOUS_ACTIVITY"}',
        THROTTLE,
        ErrorKind.RATE_LIMITED,
        SUSPICIOUS_CODE,
        None,
    ),
    (
        "suspicious-activities-hyphen",
        429,
        b'{"message":"Suspicious-activities detected"}',
        {},
        ErrorKind.RATE_LIMITED,
        SUSPICIOUS_CODE,
        None,
    ),
    (
        "credit-window-text-and-reason",
        429,
        b'{"message":"5-minute credit limit exceeded. Please wait before trying again.",'
        b'"reason":"DAILY_REQUEST_COUNT"}',
        THROTTLE,
        ErrorKind.RATE_LIMITED,
        CREDIT_WINDOW_CODE,
        None,
    ),
    (
        "credit-window-reason-only-with-retry-after",
        429,
        b'{"message":"Too many requests","reason":"DAILY_REQUEST_COUNT"}',
        {"retry-after": "97"},
        ErrorKind.RATE_LIMITED,
        CREDIT_WINDOW_CODE,
        97.0,
    ),
    (
        "credit-window-text-only",
        429,
        b"5-Minute Credit Limit Exceeded",
        {},
        ErrorKind.RATE_LIMITED,
        CREDIT_WINDOW_CODE,
        None,
    ),
    (
        "user-rate-reason",
        429,
        b'{"message":"Too many requests, please wait before trying again.",'
        b'"reason":"USER_REQUEST_RATE_EXCEEDED"}',
        THROTTLE,
        ErrorKind.RATE_LIMITED,
        USER_RATE_CODE,
        None,
    ),
    (
        "plain-throttle-has-no-code",
        429,
        b'{"message":"I am experiencing high traffic, please try again shortly.",'
        b'"reason":"INSUFFICIENT_MODEL_CAPACITY"}',
        THROTTLE,
        ErrorKind.RATE_LIMITED,
        None,
        None,
    ),
    (  # docs/kiro-protocol.md §6.2: a size error whatever the status
        "input-too-long-stays-a-size-error",
        429,
        b'{"message":"Input is too long.","reason":"CONTENT_LENGTH_EXCEEDS_THRESHOLD"}',
        THROTTLE,
        ErrorKind.CONTEXT_TOO_LONG,
        None,
        None,
    ),
    (
        "monthly-stays-quota",
        429,
        b'{"message":"Maximum Request reached for this month.","reason":"MONTHLY_REQUEST_COUNT"}',
        THROTTLE,
        ErrorKind.QUOTA_EXHAUSTED,
        None,
        None,
    ),
    (  # the words only count on a 429
        "suspicious-words-on-a-403-suspension",
        403,
        b'{"message":"We detected suspicious activity and locked it","reason":'
        b'"TEMPORARILY_SUSPENDED"}',
        {},
        ErrorKind.PERMISSION,
        SUSPENDED_CODE,
        None,
    ),
    (
        "invalid-model-is-model-not-found",
        400,
        b'{"__type":"com.amazon.kiro.runtimeservice#ValidationException","message":"Invalid '
        b'model. Please select a different model to continue.","reason":"INVALID_MODEL_ID"}',
        {},
        ErrorKind.MODEL_NOT_FOUND,
        None,
        None,
    ),
]


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "code", "retry_after"),
    [c[1:] for c in CLASSIFY_CASES],
    ids=[c[0] for c in CLASSIFY_CASES],
)
def test_classify_names_the_rate_limits_that_say_why(
    status: int,
    body: bytes,
    headers: dict[str, str],
    kind: ErrorKind,
    code: str | None,
    retry_after: float | None,
) -> None:
    err = classify_http_error(status, body, headers)
    assert (err.kind, err.code, err.retry_after) == (kind, code, retry_after)
    if code in (SUSPICIOUS_CODE, CREDIT_WINDOW_CODE, USER_RATE_CODE):
        assert err.retryable and err.upstream_status == 429


@dataclass
class _Frame:
    payload: bytes
    exception_type: str | None = "ThrottlingException"
    message_type: str = "exception"
    headers: dict[str, object] = field(default_factory=dict)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b'{"message":"Due to suspicious activity, limits apply"}', SUSPICIOUS_CODE),
        (b'{"message":"x","reason":"DAILY_REQUEST_COUNT"}', CREDIT_WINDOW_CODE),
        (b'{"message":"x","reason":"USER_REQUEST_RATE_EXCEEDED"}', USER_RATE_CODE),
        (b'{"message":"Too many requests"}', None),
    ],
)
def test_a_throttling_frame_mid_stream_is_named_too(payload: bytes, code: str | None) -> None:
    err = classify_exception_frame(_Frame(payload))
    assert isinstance(err, GatewayError)
    assert (err.kind, err.code) == (ErrorKind.RATE_LIMITED, code)


# --- policy --------------------------------------------------------------------------------------

CFG = PolicyConfig(suspicious_rest_s=1800.0, credit_window_s=300.0, user_rate_rest_s=60.0)


def _err(code: str | None, retry_after: float | None = None) -> GatewayError:
    return GatewayError(
        ErrorKind.RATE_LIMITED, "429", retryable=True, retry_after=retry_after, code=code
    )


# (code, Retry-After, the rest in seconds)
REST_CASES = [
    (SUSPICIOUS_CODE, None, 1800.0),
    (SUSPICIOUS_CODE, 12.0, 1800.0),  # Kiro's shorter Retry-After does not shorten it
    (SUSPICIOUS_CODE, 4000.0, 4000.0),  # a longer one lengthens it
    (CREDIT_WINDOW_CODE, None, 300.0),  # the window's start is unknown: a whole window
    (CREDIT_WINDOW_CODE, 97.0, 97.0),  # Kiro says when the window ends
    (USER_RATE_CODE, None, 60.0),
    (USER_RATE_CODE, 5.0, 5.0),
]


@pytest.mark.parametrize(("code", "retry_after", "rest"), REST_CASES)
def test_each_sign_rests_the_account_from_the_first_one(
    code: str, retry_after: float | None, rest: float
) -> None:
    action = failure_action(
        _err(code, retry_after),
        now=NOW,
        strikes=Strikes(),
        failure=Failure(started_at=NOW - 1),
        config=CFG,
    )
    assert action.failover and not action.disable
    assert (action.cooldown_until, action.reason) == (NOW + rest, code)
    assert action.strikes is not None and action.strikes.family == "sign"


@pytest.mark.parametrize("code", [CREDIT_WINDOW_CODE, USER_RATE_CODE, SUSPICIOUS_CODE])
def test_signs_are_never_throttle_strikes(code: str) -> None:
    """Twenty in a row: each rests for its window, none is `throttled_persistently`."""
    strikes, now = Strikes(), NOW
    for _ in range(20):
        action = failure_action(
            _err(code), now=now, strikes=strikes, failure=Failure(started_at=now), config=CFG
        )
        assert action.reason == code != STUCK_THROTTLE
        assert action.strikes is not None
        strikes = action.strikes
        now = (action.cooldown_until or now) + 1
    plain = failure_action(
        _err(None), now=now, strikes=strikes, failure=Failure(started_at=now), config=CFG
    )
    assert (plain.reason, plain.cooldown_until) == ("throttled", None)  # a new throttle series


def test_a_location_block_fails_over_without_a_plain_rest() -> None:
    err = GatewayError(ErrorKind.PERMISSION, "x", upstream_status=400, code=LOCATION_BLOCK_CODE)
    action = failure_action(
        err, now=NOW, strikes=Strikes(), failure=Failure(started_at=NOW), config=CFG
    )
    assert (action.failover, action.cooldown_until, action.reason, action.disable) == (
        True,
        None,
        LOCATION_BLOCK_CODE,
        False,
    )


# --- location blocks -----------------------------------------------------------------------------

INVALID_MODEL = GatewayError(ErrorKind.MODEL_NOT_FOUND, "Invalid model", upstream_status=400)
OFFERS = frozenset({"claude-sonnet-4.5", "claude-haiku-4.5", "deepseek-3.2"})

# (id, model, the account's live list, a Claude model refused on it before (model, s ago), block)
LOCATION_CASES: list[tuple[str, str, frozenset[str] | None, tuple[str, float] | None, bool]] = [
    ("listed-claude", "claude-sonnet-4.5", OFFERS, None, True),
    (
        "claude-upper-case-id",
        "CLAUDE_3_7_SONNET_20250219_V1_0",
        frozenset({"CLAUDE_3_7_SONNET_20250219_V1_0"}),
        None,
        True,
    ),
    ("unlisted-claude-unknown-model", "claude-opus-9", OFFERS, None, False),
    ("no-live-list-first-refusal", "claude-sonnet-4.5", None, None, False),
    ("no-live-list-second-claude", "claude-sonnet-4.5", None, ("claude-haiku-4.5", 30.0), True),
    ("same-model-twice-is-not-two", "claude-sonnet-4.5", None, ("claude-sonnet-4.5", 30.0), False),
    ("second-claude-too-late", "claude-sonnet-4.5", None, ("claude-haiku-4.5", 3600.0), False),
    ("non-claude-model", "deepseek-3.2", OFFERS, ("claude-haiku-4.5", 30.0), False),
]


@pytest.mark.parametrize(
    ("model", "offered", "prior", "block"),
    [c[1:] for c in LOCATION_CASES],
    ids=[c[0] for c in LOCATION_CASES],
)
def test_when_invalid_model_id_is_a_location_block(
    model: str, offered: frozenset[str] | None, prior: tuple[str, float] | None, block: bool
) -> None:
    trouble = Trouble()
    if prior is not None:
        trouble.reframe("a", INVALID_MODEL, prior[0], None, NOW - prior[1])
    err = trouble.reframe("a", INVALID_MODEL, model, offered, NOW)
    if block:
        assert (err.kind, err.code) == (ErrorKind.PERMISSION, LOCATION_BLOCK_CODE)
        assert "location block" in err.message and model in err.message
        assert "proxy or network outside the blocked region" in err.message
    else:
        assert err is INVALID_MODEL


def test_other_errors_are_never_reframed() -> None:
    trouble = Trouble()
    for err in (
        GatewayError(ErrorKind.MODEL_NOT_FOUND, "ours: unknown name"),  # no upstream status
        GatewayError(ErrorKind.RATE_LIMITED, "429", upstream_status=429),
    ):
        assert trouble.reframe("a", err, "claude-sonnet-4.5", OFFERS, NOW) is err


@dataclass
class _Account:
    id: str
    health: Health


class _Store:
    def __init__(self) -> None:
        self.saved: list[Health] = []

    async def put_health(self, health: Health) -> None:
        self.saved.append(health)


def test_a_blocked_account_rests_from_claude_models_only() -> None:
    trouble = Trouble(location_rest_s=600.0)
    account = _Account("a", Health("a"))
    store = _Store()
    err = trouble.reframe("a", INVALID_MODEL, "claude-sonnet-4.5", OFFERS, NOW)
    action = failure_action(
        err, now=NOW, strikes=Strikes(), failure=Failure(started_at=NOW), config=CFG
    )
    asyncio.run(trouble.failed(store, account, err, action, NOW))  # type: ignore[arg-type]
    assert account.health.claude_rest_until == NOW + 600.0
    assert store.saved[-1] == account.health
    assert trouble.blocked("claude-haiku-4.5", [account], NOW + 1) == {"a"}
    assert trouble.blocked("deepseek-3.2", [account], NOW + 1) == set()
    assert trouble.blocked("claude-haiku-4.5", [account], NOW + 601) == set()
    view = trouble_view(account.health, NOW + 1)
    assert view["warnings"] == [LOCATION_BLOCK_CODE]
    assert "likely location block" in view["warning"]


# --- warnings and suspensions --------------------------------------------------------------------

# (id, health, now offset, warning codes)
VIEW_CASES = [
    ("healthy", Health("a"), 0.0, []),
    ("suspicious-resting", Health("a", NOW + 100, SUSPICIOUS_CODE), 0.0, [SUSPICIOUS_CODE]),
    ("suspicious-over", Health("a", NOW + 100, SUSPICIOUS_CODE), 200.0, []),
    ("credit-window-is-no-warning", Health("a", NOW + 100, CREDIT_WINDOW_CODE), 0.0, []),
    ("stuck", Health("a", NOW + 100, STUCK_THROTTLE, strikes=8), 0.0, [STUCK_THROTTLE]),
    (
        "two-at-once",
        Health("a", NOW + 100, SUSPICIOUS_CODE, claude_rest_until=NOW + 50),
        0.0,
        [SUSPICIOUS_CODE, LOCATION_BLOCK_CODE],
    ),
]


@pytest.mark.parametrize(
    ("health", "offset", "codes"), [c[1:] for c in VIEW_CASES], ids=[c[0] for c in VIEW_CASES]
)
def test_the_warning_shown(health: Health, offset: float, codes: list[str]) -> None:
    view = trouble_view(health, NOW + offset)
    assert view["warnings"] == codes
    assert (view["warning"] is None) == (not codes)
    if STUCK_THROTTLE in codes:  # the text /health showed before, kept
        assert "8 429s in a row did not lift: likely out of quota or flagged" in view["warning"]


def test_a_suspension_keeps_the_last_requests_shape() -> None:
    trouble = Trouble()
    for i in range(RING_SIZE + 2):
        trouble.note_request("a", model=f"m{i}", size=1000 + i, inflight=i % 3, now=NOW + i)
    trouble.note_request("b", model="other", size=1, inflight=1, now=NOW)
    account = _Account("a", Health("a"))
    err = GatewayError(ErrorKind.PERMISSION, "suspended", code=SUSPENDED_CODE)
    action = failure_action(
        err, now=NOW + 10, strikes=Strikes(), failure=Failure(started_at=NOW), config=CFG
    )
    assert action.disable and action.reason == "suspended"
    asyncio.run(trouble.failed(_Store(), account, err, action, NOW + 10))  # type: ignore[arg-type]
    record = json.loads(account.health.suspension or "")
    assert record["at"] == NOW + 10
    assert [r["model"] for r in record["recent"]] == [f"m{i}" for i in range(2, RING_SIZE + 2)]
    assert record["recent"][-1] == {
        "at": NOW + RING_SIZE + 1,
        "model": f"m{RING_SIZE + 1}",
        "bytes": 1000 + RING_SIZE + 1,
        "inflight": (RING_SIZE + 1) % 3,
    }
    view = trouble_view(account.health, NOW + 11)
    assert view["suspension"] == record
    line = describe_suspension(account.health) or ""
    assert line.startswith("suspended at 2027-01-15") and f"m{RING_SIZE + 1} 1006 B" in line


@pytest.mark.parametrize("stored", [None, "", "not json", "[1]", '{"recent": []}'])
def test_a_missing_or_odd_suspension_record_shows_nothing(stored: str | None) -> None:
    health = Health("a", suspension=stored)
    assert describe_suspension(health) is None
    view = trouble_view(health, NOW)
    assert view["suspension"] is None or view["suspension"] == {"recent": []}


@pytest.mark.parametrize(
    ("model", "claude"),
    [
        ("claude-sonnet-4.5", True),
        ("CLAUDE_3_7", True),
        ("auto", False),
        ("deepseek-3.2", False),
        (None, False),
        ("", False),
    ],
)
def test_is_claude(model: str | None, claude: bool) -> None:
    assert is_claude(model) is claude
