"""kiro.pool_policy: account selection, failure table, availability and the no-account error."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.messages import Conversation, ImagePart, Message, TextPart
from ki2api.kiro.accounts.policy import (
    Action,
    Availability,
    Blame,
    Candidate,
    Failure,
    PolicyConfig,
    Strikes,
    availability,
    blame,
    choose,
    conversation_key,
    failure_action,
    next_month_start,
    no_account_error,
    retry_delay,
    same_answer,
)

NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
CFG = PolicyConfig()
C = Candidate

# --- choose -------------------------------------------------------------------------------------

CHOOSE = [
    ("empty", [], None, (), None),
    ("one", [C("a")], None, (), "a"),
    ("fewest-inflight", [C("a", inflight=2), C("b", inflight=1)], None, (), "b"),
    ("inflight-beats-priority", [C("a", priority=9, inflight=1), C("b")], None, (), "b"),
    ("priority", [C("a"), C("b", priority=1)], None, (), "b"),
    ("priority-beats-share", [C("a"), C("b", priority=1, served=50)], None, (), "b"),
    ("least-served", [C("a", served=3), C("b", served=2)], None, (), "b"),
    ("weighted-share", [C("a", served=3), C("b", served=5, weight=2)], None, (), "b"),
    ("weighted-share-2", [C("a", served=2), C("b", served=5, weight=2)], None, (), "a"),
    ("weight-zero-last", [C("a", served=99), C("b", weight=0)], None, (), "a"),
    ("tie-by-id", [C("b"), C("a")], None, (), "a"),
    ("skip-disabled", [C("a", enabled=False), C("b", inflight=5)], None, (), "b"),
    ("skip-cooling", [C("a", cooldown_until=NOW + 1), C("b", inflight=5)], None, (), "b"),
    ("cooldown-just-ended", [C("a", cooldown_until=NOW), C("b", inflight=5)], None, (), "a"),
    ("skip-excluded", [C("a"), C("b", inflight=5)], None, ("a",), "b"),
    ("none-healthy", [C("a", enabled=False), C("b", cooldown_until=NOW + 9)], None, (), None),
    ("all-excluded", [C("a"), C("b")], None, {"a", "b"}, None),
    ("sticky-wins", [C("a"), C("b", inflight=3, priority=-1)], "b", (), "b"),
    ("sticky-cooling", [C("a", inflight=3), C("b", cooldown_until=NOW + 1)], "b", (), "a"),
    ("sticky-disabled", [C("a", inflight=3), C("b", enabled=False)], "b", (), "a"),
    ("sticky-excluded", [C("a", inflight=3), C("b")], "b", ("b",), "a"),
    ("sticky-unknown", [C("a", inflight=3), C("b")], "zz", (), "b"),
]


@pytest.mark.parametrize(
    ("cands", "sticky", "exclude", "want"), [c[1:] for c in CHOOSE], ids=[c[0] for c in CHOOSE]
)
def test_choose(
    cands: list[Candidate], sticky: str | None, exclude: tuple[str, ...], want: str | None
) -> None:
    assert choose(cands, NOW, sticky=sticky, exclude=exclude) == want


def test_choose_spreads_by_weight() -> None:
    """Serving by smallest served/weight gives each account its weighted share."""
    pool = {"a": C("a", weight=1), "b": C("b", weight=3)}
    for _ in range(400):
        pick = choose(list(pool.values()), NOW)
        assert pick is not None
        pool[pick] = replace(pool[pick], served=pool[pick].served + 1)
    assert (pool["a"].served, pool["b"].served) == (100, 300)


# --- availability ------------------------------------------------------------------------------

AVAIL = [
    ("empty", [], Availability(None, False, True, None, 0, ())),
    ("one-healthy", [C("a")], Availability(0.0, False, False, NOW, 1, ())),
    (
        "throttled-and-healthy",
        [C("a", cooldown_until=NOW + 5, reason="throttled"), C("b")],
        Availability(0.0, False, False, NOW, 2, ("throttled",)),
    ),
    (
        "earliest-back",
        [
            C("a", cooldown_until=NOW + 30, reason="throttled"),
            C("b", cooldown_until=NOW + 7, reason="unavailable"),
            C("c", enabled=False, reason="suspended"),
        ],
        Availability(7.0, False, False, NOW + 7, 3, ("suspended", "throttled", "unavailable")),
    ),
    (
        "all-quota-with-disabled",
        [
            C("a", cooldown_until=NOW + 100, reason="quota"),
            C("b", cooldown_until=NOW + 50, reason="quota"),
            C("c", enabled=False, reason="invalid_grant"),
        ],
        Availability(50.0, True, False, NOW + 50, 3, ("invalid_grant", "quota", "quota")),
    ),
    (
        "quota-and-throttled",
        [C("a", cooldown_until=NOW + 100, reason="quota"), C("b", cooldown_until=NOW + 9)],
        Availability(9.0, False, False, NOW + 9, 2, ("cooling down", "quota")),
    ),
    (
        "quota-expired",
        [C("a", cooldown_until=NOW - 1, reason="quota")],
        Availability(0.0, False, False, NOW, 1, ()),
    ),
    (
        "all-disabled",
        [C("a", enabled=False, reason="suspended"), C("b", enabled=False)],
        Availability(None, False, True, None, 2, ("disabled", "suspended")),
    ),
]


@pytest.mark.parametrize(("cands", "want"), [a[1:] for a in AVAIL], ids=[a[0] for a in AVAIL])
def test_availability(cands: list[Candidate], want: Availability) -> None:
    assert availability(cands, NOW) == want


# --- failure_action ----------------------------------------------------------------------------


def err(
    kind: ErrorKind,
    code: str | None = None,
    retry_after: float | None = None,
    status: int | None = None,
    message: str = "x",
) -> GatewayError:
    return GatewayError(kind, message, code=code, retry_after=retry_after, upstream_status=status)


K = ErrorKind
B = Blame
RESET = NOW + 3600.0
NEXT_MONTH = datetime(2023, 12, 1, tzinfo=UTC).timestamp()
EARLIER = NOW - 1.0  # an attempt that began before the strike at NOW - 0.5
NONE = Strikes()


def S(count: int, family: str, at: float = NOW - 0.5, rest_until: float = 0.0) -> Strikes:
    return Strikes(count, family, at, rest_until)


def F(
    started_at: float = NOW - 0.1,
    others_usable: bool = True,
    quota_left: float | None = None,
    reset: float | None = None,
) -> Failure:
    return Failure(started_at, others_usable, quota_left, reset)


def A(
    cooldown: float | None,
    reason: str | None,
    strikes: Strikes | None,
    blame: Blame = B.ACCOUNT,
    failover: bool = True,
    disable: bool = False,
) -> Action:
    return Action(failover, cooldown, reason, disable, strikes, blame)


FAIL = [
    # throttling: the first 429 of a series fails over without a rest; the next rests 1 s,
    # doubling; Kiro's Retry-After always counts
    (
        "throttled-first",
        err(K.RATE_LIMITED),
        NONE,
        F(),
        A(None, "throttled", S(1, "throttle", NOW, NOW)),
    ),
    (
        "throttled-second",
        err(K.RATE_LIMITED),
        S(1, "throttle"),
        F(),
        A(NOW + 1, "throttled", S(2, "throttle", NOW, NOW + 1)),
    ),
    (
        "throttled-fourth",
        err(K.RATE_LIMITED),
        S(3, "throttle"),
        F(),
        A(NOW + 4, "throttled", S(4, "throttle", NOW, NOW + 4)),
    ),
    (
        "throttled-seventh",
        err(K.RATE_LIMITED),
        S(6, "throttle"),
        F(),
        A(NOW + 32, "throttled", S(7, "throttle", NOW, NOW + 32)),
    ),
    (  # 429s that do not lift after several rests: likely out of quota or flagged
        "throttled-eighth-is-stuck",
        err(K.RATE_LIMITED),
        S(7, "throttle"),
        F(),
        A(NOW + 1800, "throttled_persistently", S(8, "throttle", NOW, NOW + 1800)),
    ),
    (
        "throttled-stuck-huge-strikes",
        err(K.RATE_LIMITED),
        S(5000, "throttle"),
        F(),
        A(NOW + 1800, "throttled_persistently", S(5001, "throttle", NOW, NOW + 1800)),
    ),
    (
        "throttled-retry-after",
        err(K.RATE_LIMITED, retry_after=42),
        NONE,
        F(),
        A(NOW + 42, "throttled", S(1, "throttle", NOW, NOW + 42)),
    ),
    (
        "throttled-backoff-beats-retry-after",
        err(K.RATE_LIMITED, retry_after=1),
        S(2, "throttle"),
        F(),
        A(NOW + 2, "throttled", S(3, "throttle", NOW, NOW + 2)),
    ),
    # failures of attempts that began before the last strike are that strike again
    (
        "throttled-parallel",
        err(K.RATE_LIMITED),
        S(1, "throttle"),
        F(EARLIER),
        A(None, "throttled", None),
    ),
    (
        "throttled-parallel-retry-after",
        err(K.RATE_LIMITED, retry_after=9),
        S(1, "throttle"),
        F(EARLIER),
        A(NOW + 9, "throttled", None),
    ),
    # a series lapses strike_memory_s after its last strike, or after the rest it caused
    (
        "throttled-lapsed",
        err(K.RATE_LIMITED),
        S(4, "throttle", at=NOW - 11),
        F(),
        A(None, "throttled", S(1, "throttle", NOW, NOW)),
    ),
    (
        "throttled-after-long-rest",
        err(K.RATE_LIMITED),
        S(4, "throttle", at=NOW - 300, rest_until=NOW - 3),
        F(),
        A(NOW + 8, "throttled", S(5, "throttle", NOW, NOW + 8)),
    ),
    (
        "throttled-other-family",
        err(K.RATE_LIMITED),
        S(2, "passing"),
        F(),
        A(None, "throttled", S(1, "throttle", NOW, NOW)),
    ),
    # quota: benched until the reset, unless a fresh getUsageLimits shows requests left
    ("quota-reset-known", err(K.QUOTA_EXHAUSTED), NONE, F(reset=RESET), A(RESET, "quota", NONE)),
    (
        "quota-reset-past",
        err(K.QUOTA_EXHAUSTED),
        S(3, "throttle"),
        F(reset=NOW - 1),
        A(NEXT_MONTH, "quota", NONE),
    ),
    ("quota-reset-unknown", err(K.QUOTA_EXHAUSTED), NONE, F(), A(NEXT_MONTH, "quota", NONE)),
    (
        "quota-none-left",
        err(K.QUOTA_EXHAUSTED),
        NONE,
        F(quota_left=0, reset=RESET),
        A(RESET, "quota", NONE),
    ),
    (
        "quota-but-requests-left",
        err(K.QUOTA_EXHAUSTED),
        NONE,
        F(quota_left=31, reset=RESET),
        A(None, "limited", S(1, "throttle", NOW, NOW)),
    ),
    (
        "quota-left-again",
        err(K.QUOTA_EXHAUSTED),
        S(1, "throttle"),
        F(quota_left=31),
        A(NOW + 1, "limited", S(2, "throttle", NOW, NOW + 1)),
    ),
    # fatal: disabled
    (
        "suspended",
        err(K.PERMISSION, "account_suspended"),
        S(4, "account"),
        F(),
        A(None, "suspended", None, disable=True),
    ),
    (
        "invalid-grant",
        err(K.UPSTREAM_AUTH, "invalid_grant"),
        NONE,
        F(),
        A(None, "invalid_grant", None, disable=True),
    ),
    # the account's other faults rest it from the first
    (
        "forbidden",
        err(K.PERMISSION),
        S(1, "account"),
        F(),
        A(NOW + 4, "forbidden", S(2, "account", NOW, NOW + 4)),
    ),
    (
        "auth",
        err(K.UPSTREAM_AUTH, "other"),
        NONE,
        F(),
        A(NOW + 2, "auth", S(1, "account", NOW, NOW + 2)),
    ),
    (
        "creds",
        err(K.NO_CREDENTIALS),
        S(2, "account"),
        F(),
        A(NOW + 8, "credentials", S(3, "account", NOW, NOW + 8)),
    ),
    ("auth-parallel", err(K.UPSTREAM_AUTH), S(1, "account"), F(EARLIER), A(None, "auth", None)),
    # passing faults: fail over; rest only the third in a row, and never the last usable account
    (
        "unavailable-first",
        err(K.UPSTREAM_UNAVAILABLE),
        NONE,
        F(),
        A(None, "unavailable", S(1, "passing", NOW), B.NOBODY),
    ),
    (
        "unavailable-second",
        err(K.UPSTREAM_UNAVAILABLE),
        S(1, "passing"),
        F(),
        A(None, "unavailable", S(2, "passing", NOW), B.NOBODY),
    ),
    (
        "timeout-third",
        err(K.UPSTREAM_TIMEOUT),
        S(2, "passing"),
        F(),
        A(NOW + 2, "timeout", S(3, "passing", NOW, NOW + 2), B.NOBODY),
    ),
    (
        "protocol-fifth",
        err(K.UPSTREAM_PROTOCOL),
        S(4, "passing"),
        F(),
        A(NOW + 8, "protocol", S(5, "passing", NOW, NOW + 8), B.NOBODY),
    ),
    (
        "error-cap",
        err(K.UPSTREAM_ERROR),
        S(50, "passing"),
        F(),
        A(NOW + 60, "error", S(51, "passing", NOW, NOW + 60), B.NOBODY),
    ),
    (
        "passing-last-usable",
        err(K.UPSTREAM_ERROR),
        S(7, "passing"),
        F(others_usable=False),
        A(None, "error", S(8, "passing", NOW), B.NOBODY),
    ),
    (
        "passing-parallel",
        err(K.UPSTREAM_PROTOCOL),
        S(2, "passing"),
        F(EARLIER),
        A(None, "protocol", None, B.NOBODY),
    ),
    (
        "passing-lapsed",
        err(K.UPSTREAM_PROTOCOL),
        S(9, "passing", at=NOW - 30),
        F(),
        A(None, "protocol", S(1, "passing", NOW), B.NOBODY),
    ),
    (
        "passing-after-throttles",
        err(K.UPSTREAM_TIMEOUT),
        S(2, "throttle"),
        F(),
        A(None, "timeout", S(1, "passing", NOW), B.NOBODY),
    ),
    # the request's own faults: never fail over, never touch the account
    *[
        (
            f"request-{k.value}",
            err(k, "account_suspended"),
            S(1, "passing"),
            F(reset=RESET),
            A(None, None, None, B.REQUEST, failover=False),
        )
        for k in (
            K.CONTEXT_TOO_LONG,
            K.UPSTREAM_REJECTED,
            K.MODEL_NOT_FOUND,
            K.INVALID_REQUEST,
            K.REQUEST_TOO_LARGE,
            K.AUTHENTICATION,
            K.CANCELLED,
            K.INTERNAL,
            K.NOT_FOUND,
        )
    ],
]


@pytest.mark.parametrize(
    ("error", "strikes", "failure", "want"), [f[1:] for f in FAIL], ids=[f[0] for f in FAIL]
)
def test_failure_action(
    error: GatewayError, strikes: Strikes, failure: Failure, want: Action
) -> None:
    got = failure_action(error, now=NOW, strikes=strikes, failure=failure, config=CFG)
    assert got == want


def test_throttle_rests_are_capped_below_the_stuck_threshold() -> None:
    cfg = PolicyConfig(stuck_throttles=10_000)
    got = failure_action(
        err(K.RATE_LIMITED), now=NOW, strikes=S(50, "throttle"), failure=F(), config=cfg
    )
    assert got.cooldown_until == NOW + 300 and got.reason == "throttled"


def test_every_error_kind_has_a_policy() -> None:
    """A new ErrorKind must be placed in the table on purpose (this lists today's kinds)."""
    covered = {f[1].kind for f in FAIL}
    assert covered == set(ErrorKind)


U500 = err(K.UPSTREAM_UNAVAILABLE, status=500, message="Kiro failed with HTTP 500")
SAME = [
    ("same-5xx", U500, err(K.UPSTREAM_UNAVAILABLE, status=500, message=U500.message), True),
    ("other-text", U500, err(K.UPSTREAM_UNAVAILABLE, status=500, message="other"), False),
    ("other-status", U500, err(K.UPSTREAM_UNAVAILABLE, status=503, message=U500.message), False),
    ("cut-streams", err(K.UPSTREAM_PROTOCOL), err(K.UPSTREAM_PROTOCOL), False),
    (  # exception frames carry the 200 of the stream that brought them
        "same-exception-frame",
        err(K.UPSTREAM_ERROR, status=200, message="Kiro reported an error in the stream [error]"),
        err(K.UPSTREAM_ERROR, status=200, message="Kiro reported an error in the stream [error]"),
        True,
    ),
    ("timeouts", err(K.UPSTREAM_TIMEOUT), err(K.UPSTREAM_TIMEOUT), False),
    ("same-429", err(K.RATE_LIMITED, status=429), err(K.RATE_LIMITED, status=429), False),
]


@pytest.mark.parametrize(("a", "b", "want"), [s[1:] for s in SAME], ids=[s[0] for s in SAME])
def test_same_answer(a: GatewayError, b: GatewayError, want: bool) -> None:
    """The same answer from Kiro twice makes a passing fault the request's; network-level
    faults never do, nor do the account's own (a 429 on every account is not the request)."""
    assert same_answer(a, b) is want
    assert same_answer(b, a) is want


@pytest.mark.parametrize(
    ("error", "want"),
    [
        (err(K.RATE_LIMITED), B.ACCOUNT),
        (err(K.QUOTA_EXHAUSTED), B.ACCOUNT),
        (err(K.PERMISSION), B.ACCOUNT),
        (err(K.NO_CREDENTIALS), B.ACCOUNT),
        (err(K.UPSTREAM_PROTOCOL), B.NOBODY),
        (err(K.UPSTREAM_UNAVAILABLE), B.NOBODY),
        (err(K.UPSTREAM_REJECTED), B.REQUEST),
        (err(K.UPSTREAM_PROTOCOL, "tool_input_truncated"), B.REQUEST),  # any account would
        (err(K.CONTEXT_TOO_LONG), B.REQUEST),
    ],
    ids=lambda v: getattr(v, "kind", v),
)
def test_blame(error: GatewayError, want: Blame) -> None:
    assert blame(error) is want


# --- retry_delay / next_month_start ------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "want"),
    [(0, 0.0), (1, 0.0), (2, 0.1), (3, 0.2), (4, 0.4), (5, 0.8), (6, 1.0), (60, 1.0)],
    ids=lambda v: str(v),
)
def test_retry_delay(attempt: int, want: float) -> None:
    assert retry_delay(attempt, CFG) == pytest.approx(want)


def _ts(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> float:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("now", "want"),
    [
        (_ts(2023, 11, 14, 22, 13), _ts(2023, 12, 1)),
        (_ts(2023, 12, 31, 23, 59, 59), _ts(2024, 1, 1)),
        (_ts(2024, 1, 1), _ts(2024, 2, 1)),
        (_ts(2024, 2, 29, 12), _ts(2024, 3, 1)),
    ],
    ids=["mid-month", "december", "exactly-first", "leap-day"],
)
def test_next_month_start(now: float, want: float) -> None:
    assert next_month_start(now) == want


# --- conversation_key ---------------------------------------------------------------------------


def user(*parts: TextPart | ImagePart) -> Message:
    return Message("user", parts)


def asst(text: str) -> Message:
    return Message("assistant", (TextPart(text),))


IMG = ImagePart("image/png", "iVBORw0KGgo" * 50)
BASE = Conversation("claude-sonnet-4.5", (user(TextPart("hello")),), system=("be brief",))


@pytest.mark.parametrize(
    ("later", "same"),
    [
        (replace(BASE, messages=(*BASE.messages, asst("hi"), user(TextPart("more")))), True),
        (replace(BASE, messages=(user(TextPart("hello")), asst("a"), user(IMG))), True),
        (replace(BASE, model_id="claude-haiku-4.5"), False),
        (replace(BASE, system=("be verbose",)), False),
        (replace(BASE, system=()), False),
        (replace(BASE, messages=(user(TextPart("hello!")),)), False),
        (replace(BASE, messages=(user(TextPart("hel"), TextPart("lo")),)), False),
        (replace(BASE, messages=(user(TextPart("hello"), IMG),)), False),
        (replace(BASE, system=("be", " brief")), False),
    ],
    ids=[
        "next-turn",
        "next-turn-image",
        "model",
        "system",
        "no-system",
        "first-text",
        "split-text",
        "image-added",
        "split-system",
    ],
)
def test_conversation_key_hash(later: Conversation, same: bool) -> None:
    key = conversation_key(BASE)
    assert len(key) == 24 and int(key, 16) >= 0
    assert (conversation_key(later) == key) is same


def test_conversation_key_prefers_id_and_skips_image_bytes() -> None:
    assert conversation_key(replace(BASE, conversation_id="conv-1")) == "conv-1"
    a = replace(BASE, messages=(user(TextPart("x"), ImagePart("image/png", "A" * 40)),))
    b = replace(BASE, messages=(user(TextPart("x"), ImagePart("image/png", "B" * 40)),))
    assert conversation_key(a) == conversation_key(b)  # only type and size of images count
    empty = Conversation("m", ())
    assert conversation_key(empty) == conversation_key(Conversation("m", ()))


# --- no_account_error ---------------------------------------------------------------------------

LAST = GatewayError(ErrorKind.UPSTREAM_TIMEOUT, "slow")
NOERR = [
    (
        "all-quota",
        [C("a", cooldown_until=NEXT_MONTH, reason="quota"), C("b", enabled=False)],
        None,
        (K.QUOTA_EXHAUSTED, False, NEXT_MONTH - NOW, ["out of quota until 2023-12-01 00:00 UTC"]),
    ),
    (
        "throttled",
        [C("a", cooldown_until=NOW + 4.2, reason="throttled"), C("b", cooldown_until=NOW + 9)],
        LAST,
        (K.RATE_LIMITED, True, 4.2, ["all 2 Kiro accounts", "1 throttled", "back in 5 s"]),
    ),
    (
        "only-unavailable",
        [C("a", cooldown_until=NOW + 2, reason="unavailable")],
        LAST,
        (K.UPSTREAM_UNAVAILABLE, True, 2.0, ["the only Kiro account", "1 unavailable"]),
    ),
    (
        "all-disabled",
        [C("a", enabled=False, reason="suspended"), C("b", enabled=False, reason="invalid_grant")],
        LAST,
        (K.NO_CREDENTIALS, False, None, ["1 invalid_grant, 1 suspended", "ki2api accounts list"]),
    ),
    ("empty", [], None, (K.NO_CREDENTIALS, False, None, ["none is configured"])),
    ("ready-last", [C("a")], LAST, (K.UPSTREAM_TIMEOUT, False, None, ["slow"])),
    ("ready-none", [C("a")], None, (K.UPSTREAM_UNAVAILABLE, True, None, ["could serve"])),
]


@pytest.mark.parametrize(
    ("cands", "last", "want"), [n[1:] for n in NOERR], ids=[n[0] for n in NOERR]
)
def test_no_account_error(
    cands: list[Candidate],
    last: GatewayError | None,
    want: tuple[ErrorKind, bool, float | None, list[str]],
) -> None:
    kind, retryable, retry_after, phrases = want
    e = no_account_error(availability(cands, NOW), last)
    assert (e.kind, e.retryable) == (kind, retryable)
    assert e.retry_after == (None if retry_after is None else pytest.approx(retry_after))
    for phrase in phrases:
        assert phrase in e.message
    assert "token" not in e.message.lower()


def test_no_account_error_from_bare_availability() -> None:
    """An Availability built with only the three main fields still gives a sane message."""
    e = no_account_error(Availability(12.0, True, False), None)
    assert e.kind is ErrorKind.QUOTA_EXHAUSTED and "until its reset" in e.message
    e = no_account_error(Availability(3.0, False, False), None)
    assert e.retry_after == 3.0 and "every Kiro account is" in e.message
