"""Issue 5 §3 end to end: selection and failover over a pool of emulator accounts.

Official SDKs (strict) and raw httpx -> the gateway under uvicorn -> the Kiro emulator under
uvicorn. Every test counts what the emulator saw per account, not only what the client got.
Pool ids `p0`, `p1`, ... sort in creation order, so the pool breaks ties towards `p0`.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from ki2api.kiro.accounts.quota import check_quotas
from ki2api.kiro.accounts.registry import store_path, sync_discovered
from ki2api.state.sqlite import SQLiteStore
from tests.conftest import API_KEY, Gateway, gateway_settings
from tests.support.pool_accounts import (
    Member,
    chat_requests,
    emulator_counters,
    health_of,
    make_pool,
    patch_behaviour,
    start_pool_gateway,
    wait_for,
)

OPENAI_MODEL = "claude-sonnet-4-20250514"
ANTHROPIC_MODEL = "claude-sonnet-4-6"
OPENAI_AUTH = {"Authorization": f"Bearer {API_KEY}"}
ANTHROPIC_AUTH = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}


def emu(**directive: Any) -> str:
    return f"<emu>{json.dumps(directive)}</emu>"


def ask_openai(gw: Gateway, text: str, *, stream: bool) -> str:
    client = gw.openai()
    messages: Any = [{"role": "user", "content": text}]
    if not stream:
        reply = client.chat.completions.create(model=OPENAI_MODEL, messages=messages)
        assert reply.choices[0].finish_reason == "stop"
        return reply.choices[0].message.content or ""
    parts: list[str] = []
    finish = None
    for chunk in client.chat.completions.create(model=OPENAI_MODEL, messages=messages, stream=True):
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "stop"
    return "".join(parts)


def ask_anthropic(gw: Gateway, text: str, *, stream: bool) -> str:
    client = gw.anthropic()
    messages: Any = [{"role": "user", "content": text}]
    if not stream:
        msg = client.messages.create(model=ANTHROPIC_MODEL, max_tokens=200, messages=messages)
        assert msg.stop_reason == "end_turn"
        return "".join(b.text for b in msg.content if b.type == "text")
    parts: list[str] = []
    stop = None
    for ev in client.messages.create(
        model=ANTHROPIC_MODEL, max_tokens=200, messages=messages, stream=True
    ):
        if ev.type == "content_block_delta" and ev.delta.type == "text_delta":
            parts.append(ev.delta.text)
        if ev.type == "message_delta":
            stop = ev.delta.stop_reason
    assert stop == "end_turn"
    return "".join(parts)


def ask(gw: Gateway, text: str, *, stream: bool, dialect: str) -> str:
    answer = (ask_openai if dialect == "openai" else ask_anthropic)(gw, text, stream=stream)
    assert answer.startswith("Echo: "), answer
    return answer


def post_openai(gw: Gateway, text: str) -> httpx.Response:
    body = {"model": OPENAI_MODEL, "messages": [{"role": "user", "content": text}]}
    return httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=OPENAI_AUTH)


def post_anthropic(gw: Gateway, text: str) -> httpx.Response:
    body = {
        "model": ANTHROPIC_MODEL,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": text}],
    }
    return httpx.post(f"{gw.url}/v1/messages", json=body, headers=ANTHROPIC_AUTH)


def retry_after(r: httpx.Response) -> int:
    raw = r.headers["retry-after"]
    assert raw.isdigit(), raw  # whole seconds
    return int(raw)


def assert_openai_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return dict(err)


def assert_anthropic_error(r: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    data = r.json()
    assert data["type"] == "error" and data["error"]["type"] == kind, data
    assert data["error"]["message"]
    return dict(data["error"])


# 1. three accounts: throttled, out of quota, healthy -----------------------------------------


def _mixed_request(gw: Gateway, n: int) -> str:
    dialect = "openai" if n % 4 < 2 else "anthropic"
    return ask(gw, f"request {n}", stream=n % 2 == 0, dialect=dialect)


def _usage_rows(gw: Gateway) -> int:
    async def count() -> int:
        store = SQLiteStore.open(store_path(gw.settings))
        try:
            return await store.usage_count()
        finally:
            await store.aclose()

    return asyncio.run(count())


def test_hundred_requests_over_throttled_quota_and_healthy_accounts(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    throttled, quota, healthy = make_pool(
        emulator_url, tmp_path, [{"throttled": True}, {"quota_exhausted": True}, {}]
    )
    gw = start_pool_gateway(gateway_factory, [throttled, quota, healthy], tmp_path)
    with ThreadPoolExecutor(max_workers=4) as ex:
        answers = list(ex.map(lambda n: _mixed_request(gw, n), range(100)))
    assert [a.removeprefix("Echo: ") for a in answers] == [f"request {n}" for n in range(100)]
    assert chat_requests(emulator_url, quota) <= 4  # at most the first wave
    after_first_run = chat_requests(emulator_url, quota)
    seen = health_of(gw)[quota.pool_id]
    assert seen["enabled"] and seen["reason"] == "quota" and seen["cooldown_s"] > 0, seen

    with ThreadPoolExecutor(max_workers=4) as ex:
        list(ex.map(lambda n: _mixed_request(gw, n), range(100, 120)))
    assert chat_requests(emulator_url, quota) == after_first_run  # not before its reset
    # The throttled account rests (5 s, doubling per 429) after each 429: tried only now and
    # then, at most one wave of 4 concurrent requests per rest (4 waves is > 75 s of rests).
    assert 1 <= chat_requests(emulator_url, throttled) <= 16
    assert emulator_counters(emulator_url, healthy)["served"] == 120
    assert emulator_counters(emulator_url, throttled)["served"] == 0
    assert emulator_counters(emulator_url, quota)["served"] == 0
    # One usage row per client request, whatever happened upstream.
    assert wait_for(lambda: _usage_rows(gw) >= 120)
    assert _usage_rows(gw) == 120


# 2. no account can serve ------------------------------------------------------------------


def _all_throttled(
    emulator_url: str, tmp_path: Path, gateway_factory: Any, **behaviour: Any
) -> tuple[list[Member], Gateway, list[httpx.Response]]:
    """Two throttled accounts; one request in each dialect, both answered 429."""
    throttled = {"throttled": True, **behaviour}
    members = make_pool(emulator_url, tmp_path, [throttled, throttled])
    gw = start_pool_gateway(gateway_factory, members, tmp_path, throttle_cooldown_s=1.0)
    r_openai = post_openai(gw, "busy?")
    err = assert_openai_error(r_openai, 429)
    assert err["type"] == "rate_limit_error" or err["code"] == "rate_limit_exceeded", err
    r_anthropic = post_anthropic(gw, "busy?")
    assert_anthropic_error(r_anthropic, 429, "rate_limit_error")
    assert all(chat_requests(emulator_url, m) >= 1 for m in members)
    for r in (r_openai, r_anthropic):
        assert retry_after(r) >= 1, r.headers
        assert r.headers.get("x-should-retry") != "false"
    return members, gw, [r_openai, r_anthropic]


def test_all_throttled_gives_429_with_retry_after_then_recovers(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    members, gw, answers = _all_throttled(emulator_url, tmp_path, gateway_factory)
    for m in members:
        patch_behaviour(emulator_url, m.emu_id, throttled=False)
    time.sleep(max(retry_after(r) for r in answers) + 0.2)
    ask(gw, "back?", stream=False, dialect="openai")
    ask(gw, "back?", stream=True, dialect="anthropic")
    assert sum(emulator_counters(emulator_url, m)["served"] for m in members) == 2


def test_all_throttled_retry_after_honours_upstream_retry_after(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    _, _, answers = _all_throttled(emulator_url, tmp_path, gateway_factory, retry_after_s=30)
    assert all(retry_after(r) >= 29 for r in answers), [r.headers for r in answers]


def test_all_throttled_retry_after_follows_the_throttle_cooldown(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    members, _, answers = _all_throttled(emulator_url, tmp_path, gateway_factory)
    # The policy rests an account 1 s after its first 429, doubling per repeat: the longest
    # rest so far follows from how many 429s the emulator sent it.
    longest = max(2.0 ** (chat_requests(emulator_url, m) - 1) for m in members)
    for r in answers:
        assert retry_after(r) <= math.ceil(longest), (r.headers, longest)


def _precheck_quota(emulator_url: str, members: list[Member], tmp_path: Path) -> None:
    """What `ki2api accounts list` does: register the accounts and fetch their quota."""
    settings = gateway_settings(
        emulator_url,
        members[0].account,
        tmp_path,
        kiro_creds_dir=tmp_path / "creds",
        kiro_creds_file=None,
    )

    async def run() -> None:
        store = SQLiteStore.open(store_path(settings))
        try:
            await sync_discovered(settings, store)
            assert await check_quotas(settings, store) == []
        finally:
            await store.aclose()

    asyncio.run(run())


def _assert_all_out_of_quota(gw: Gateway, reset_at: float) -> None:
    r_openai = post_openai(gw, "any quota left?")
    err = assert_openai_error(r_openai, 429)
    assert err["code"] == "insufficient_quota", err
    r_anthropic = post_anthropic(gw, "any quota left?")
    assert_anthropic_error(r_anthropic, 429, "rate_limit_error")
    for r in (r_openai, r_anthropic):
        assert r.headers["x-should-retry"] == "false"
        # Until the reset the emulator reports (a tolerance for slow machines, not a timing).
        assert abs(retry_after(r) - (reset_at - time.time())) < 600, r.headers


@pytest.mark.parametrize("precheck", [True, False], ids=["quota-checked", "learned-on-402"])
def test_all_out_of_quota_gives_429_not_to_retry_until_reset(
    emulator_url: str, tmp_path: Path, gateway_factory: Any, precheck: bool
) -> None:
    reset_at = float(int(time.time()) + 3 * 86400 + 3600)
    behaviour = {"quota_exhausted": True, "quota_reset_at": reset_at}
    members = make_pool(emulator_url, tmp_path, [behaviour, behaviour])
    if precheck:
        _precheck_quota(emulator_url, members, tmp_path)
    gw = start_pool_gateway(gateway_factory, members, tmp_path)
    if not precheck:  # the gateway itself learns the reset date (getUsageLimits) on a 402
        assert _learns_reset(gw, reset_at)
    _assert_all_out_of_quota(gw, reset_at)
    counts = [chat_requests(emulator_url, m) for m in members]
    _assert_all_out_of_quota(gw, reset_at)
    assert [chat_requests(emulator_url, m) for m in members] == counts  # not tried again
    assert all(c == 1 for c in counts), counts


def _learns_reset(gw: Gateway, reset_at: float) -> bool:
    r = post_openai(gw, "probe")
    return r.status_code == 429 and abs(retry_after(r) - (reset_at - time.time())) < 600


# 3. failover before the first byte ------------------------------------------------------

# The first-event timeout applies to every attempt, the good account's too: on a busy machine
# (a full parallel run) its first event once took over 0.5 s, the attempt timed out, the good
# account was tried again and served twice. Only first_event_delay needs a short timeout: six
# times that slowest first event, and a tenth of the bad account's delay. The other faults fail
# at once and keep a timeout no busy machine reaches.
SLOW_FIRST_EVENT_S = 3.0
FIRST_EVENT_TIMEOUT_S = 60.0


FAULTS = [
    pytest.param("server_error", {"server_error": True}, False, id="server_error"),
    pytest.param("unavailable", {"unavailable": True}, False, id="unavailable"),
    pytest.param("high_load", {"high_load": True}, False, id="high_load"),
    pytest.param("drop_connection", {"drop_connection": True}, False, id="drop_connection"),
    pytest.param("empty_stream", {"empty_stream": True}, False, id="empty_stream"),
    pytest.param(
        "first_event_delay",
        {"first_event_delay_ms": 10_000 * SLOW_FIRST_EVENT_S},
        False,
        id="first_event_delay",
    ),
    pytest.param("throttled", {"throttled": True}, False, id="throttled"),
    pytest.param("suspended", {"suspended": True}, False, id="suspended"),
    pytest.param("refresh_fails", {"refresh_fails": True}, True, id="refresh_fails"),
]


@pytest.mark.parametrize(("name", "behaviour", "expired"), FAULTS)
@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_failover_before_first_byte(
    emulator_url: str,
    tmp_path: Path,
    gateway_factory: Any,
    name: str,
    behaviour: dict[str, Any],
    expired: bool,
    dialect: str,
) -> None:
    bad, good = make_pool(emulator_url, tmp_path, [behaviour, {}], expired=[expired])
    # rests far longer than the test, however busy the machine: the fourth request must find
    # the bad account still resting
    gw = start_pool_gateway(
        gateway_factory,
        [bad, good],
        tmp_path,
        first_event_timeout_s=(
            SLOW_FIRST_EVENT_S if name == "first_event_delay" else FIRST_EVENT_TIMEOUT_S
        ),
        throttle_cooldown_s=60.0,
        error_cooldown_s=60.0,
    )
    assert ask(gw, "first", stream=True, dialect=dialect) == "Echo: first"
    assert ask(gw, "second", stream=False, dialect=dialect) == "Echo: second"
    assert ask(gw, "third", stream=True, dialect=dialect) == "Echo: third"

    assert emulator_counters(emulator_url, good)["served"] == 3
    bad_counters = emulator_counters(emulator_url, bad)
    state = health_of(gw)[bad.pool_id]
    if name == "refresh_fails":  # the login is revoked: never reaches a chat call
        assert bad_counters["refresh_failures"] >= 1 and bad_counters["chat_requests"] == 0
        assert not state["enabled"] and state["disabled_reason"] == "invalid_grant", state
    elif name == "suspended":  # disabled at once: not tried again
        assert bad_counters["chat_requests"] == 1
        assert not state["enabled"] and state["disabled_reason"] == "suspended", state
    elif name == "throttled":  # one 429 may be a blip; the second in a row rests the account
        assert bad_counters["chat_requests"] == 2
        assert state["enabled"] and state["reason"] == "throttled", state
        assert state["cooldown_s"] > 0, state
    else:  # tried first each time (ties go to p0); a passing fault rests it the 3rd time in a row
        assert bad_counters["chat_requests"] == 3, bad_counters
        assert state["enabled"] and state["cooldown_s"] > 0, state
    before = chat_requests(emulator_url, bad)
    ask(gw, "fourth", stream=False, dialect=dialect)
    assert chat_requests(emulator_url, bad) == before
    assert emulator_counters(emulator_url, good)["served"] == 4


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_clean_end_without_closing_events_is_an_answer_not_a_failure(
    emulator_url: str, tmp_path: Path, gateway_factory: Any, stream: bool
) -> None:
    """Real 2025 answers had no metering / context-usage events at all: a body that ended
    cleanly is complete, so the account that sent it serves and nothing fails over."""
    bare, other = make_pool(emulator_url, tmp_path, [{"end_without_closing": True}, {}])
    gw = start_pool_gateway(gateway_factory, [bare, other], tmp_path)
    assert ask(gw, "no tail", stream=stream, dialect="openai") == "Echo: no tail"
    assert ask(gw, "no tail", stream=stream, dialect="anthropic") == "Echo: no tail"
    served = emulator_counters(emulator_url, bare)["served"]
    assert served >= 1  # ties go to p0 first: the bare account answered
    assert served + emulator_counters(emulator_url, other)["served"] == 2
    assert chat_requests(emulator_url, bare) == served  # no failed attempt on it
    assert health_of(gw)[bare.pool_id]["reason"] is None


@pytest.mark.parametrize("exc_type", ["error", "InternalServerException"])
def test_an_exception_frame_before_any_content_fails_over_once_then_is_the_requests(
    emulator_url: str, tmp_path: Path, gateway_factory: Any, exc_type: str
) -> None:
    """An in-stream exception (the official model's only type is `error`) before any content is
    an upstream failure: the request fails over. The same exception from the second account
    makes the request the cause: no third call, and no account is struck for it."""
    members = make_pool(emulator_url, tmp_path, [{}, {}])
    gw = start_pool_gateway(gateway_factory, members, tmp_path)
    directive = {"exception": {"type": exc_type, "message": "boom", "after_events": 0}}
    r = post_openai(gw, "x<emu>" + json.dumps(directive) + "</emu>")
    err = assert_openai_error(r, r.status_code)
    assert r.status_code >= 500 and "boom" in err["message"], r.text
    assert [chat_requests(emulator_url, m) for m in members] == [1, 1]
    assert all(h["reason"] is None for h in health_of(gw).values()), health_of(gw)


# 4. the request itself is bad: never another account -----------------------------------


REFUSALS = [
    (
        "improperly formed",
        {"status": 400, "body": {"message": "Improperly formed request.", "reason": None}},
    ),
    (
        "input too long",
        {
            "status": 400,
            "body": {"message": "Input is too long.", "reason": "CONTENT_LENGTH_EXCEEDS_THRESHOLD"},
        },
    ),
]


@pytest.mark.parametrize(("name", "error"), REFUSALS, ids=[r[0] for r in REFUSALS])
@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_bad_request_is_never_retried_on_another_account(
    emulator_url: str,
    tmp_path: Path,
    gateway_factory: Any,
    name: str,
    error: dict[str, Any],
    dialect: str,
    stream: bool,
) -> None:
    members = make_pool(emulator_url, tmp_path, [{}, {}])
    gw = start_pool_gateway(gateway_factory, members, tmp_path)
    text = "refuse me" + emu(error=error)
    if dialect == "openai":
        body: dict[str, Any] = {"model": OPENAI_MODEL, "stream": stream}
        url, headers = f"{gw.url}/v1/chat/completions", OPENAI_AUTH
    else:
        body = {"model": ANTHROPIC_MODEL, "max_tokens": 100, "stream": stream}
        url, headers = f"{gw.url}/v1/messages", ANTHROPIC_AUTH
    body["messages"] = [{"role": "user", "content": text}]
    r = httpx.post(url, json=body, headers=headers)
    if dialect == "openai":
        assert_openai_error(r, 400)
    else:
        assert_anthropic_error(r, 400, "invalid_request_error")
    assert sum(chat_requests(emulator_url, m) for m in members) == 1
    assert all(a["enabled"] and not a["cooldown_s"] for a in health_of(gw).values())


# 5. one conversation stays on one account ---------------------------------------------


def _turn(gw: Gateway, history: list[dict[str, str]], text: str) -> None:
    history.append({"role": "user", "content": text})
    reply = gw.openai().chat.completions.create(model=OPENAI_MODEL, messages=history)  # type: ignore[arg-type]
    history.append({"role": "assistant", "content": reply.choices[0].message.content or ""})


def test_a_conversation_sticks_to_one_account(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    members = make_pool(emulator_url, tmp_path, [{}, {}])
    gw = start_pool_gateway(gateway_factory, members, tmp_path)
    conversations: dict[str, list[dict[str, str]]] = {f"conv-{i}-marker": [] for i in range(4)}
    accounts_of: dict[str, set[str]] = {}
    # Who served each turn, from the per-account counters (turns go one at a time) rather
    # than the emulator's request log: that log is the whole worker's, 256 entries at most.
    calls = [chat_requests(emulator_url, m) for m in members]
    for turn in range(3):
        for marker, history in conversations.items():
            _turn(gw, history, f"{marker} turn {turn}" if turn == 0 else f"turn {turn}")
            before, calls = calls, [chat_requests(emulator_url, m) for m in members]
            served = [m.emu_id for m, b, c in zip(members, before, calls, strict=True) if c != b]
            assert sum(calls) - sum(before) == 1, (marker, turn, before, calls)  # no retry
            accounts_of.setdefault(marker, set()).update(served)
    assert all(len(a) == 1 for a in accounts_of.values()), accounts_of
    assert set().union(*accounts_of.values()) == {m.emu_id for m in members}


# 6. an account flips to throttled mid-run and back ------------------------------------


def test_flip_to_throttled_mid_run_and_back(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    first, second = make_pool(emulator_url, tmp_path, [{}, {}])
    gw = start_pool_gateway(gateway_factory, [first, second], tmp_path, throttle_cooldown_s=1.0)
    for n in range(4):
        ask(gw, f"warm {n}", stream=n % 2 == 0, dialect="openai")
    assert emulator_counters(emulator_url, first)["served"] >= 1

    patch_behaviour(emulator_url, first.emu_id, throttled=True)
    served_before = emulator_counters(emulator_url, first)["served"]
    for n in range(6):
        ask(gw, f"flipped {n}", stream=n % 2 == 1, dialect="anthropic")
    assert emulator_counters(emulator_url, first)["served"] == served_before
    assert chat_requests(emulator_url, first) > served_before  # it was tried, then rested
    assert health_of(gw)[first.pool_id]["reason"] == "throttled"

    patch_behaviour(emulator_url, first.emu_id, throttled=False)
    assert wait_for(lambda: health_of(gw)[first.pool_id]["cooldown_s"] == 0, timeout=30)
    for n in range(4):
        ask(gw, f"after {n}", stream=n % 2 == 0, dialect="openai")
    assert emulator_counters(emulator_url, first)["served"] > served_before
