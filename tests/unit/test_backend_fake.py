"""KiroBackend over a scripted in-process transport (tests/support/fake_transport.py): the
failover loop, the refresh-and-retry, the first-content hold. Real pool (SQLite in a tmp dir),
real credentials, real event-stream bytes; no socket, millisecond timeouts."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.events import Event, MessageStop, TextDelta
from ki2api.core.messages import Conversation, Message, TextPart
from ki2api.kiro import backend as backend_module
from ki2api.kiro.accounts.pool import AccountPool
from ki2api.kiro.backend import BackendOptions, KiroBackend
from ki2api.kiro.mcp import KiroWebSearch
from ki2api.kiro.request.build import KiroRequest, build_kiro_request
from ki2api.kiro.request.conversation_id import kiro_conversation_id
from tests.support.fake_pool import PROFILE_ARN, FakeAuth, fake_pool, health
from tests.support.fake_transport import (
    DROP,
    FakeChatTransport,
    Pause,
    Posted,
    Reply,
    Step,
    answer,
    bearer_invalid,
    exception_frame,
    http_error,
    tail_frames,
    text_frame,
)

CONV = Conversation(model_id="claude-sonnet-4.5", messages=(Message("user", (TextPart("hi"),)),))
Script = Iterable[Reply] | Callable[[Posted], Reply]


class Rig:
    def __init__(self, pool: AccountPool, auth: FakeAuth) -> None:
        self.pool = pool
        self.auth = auth
        self.chat: FakeChatTransport = FakeChatTransport([])

    def backend(self, script: Script, **options: Any) -> KiroBackend:
        self.chat = FakeChatTransport(script)
        opts = dataclasses.replace(BackendOptions(api_base="https://q.test"), **options)
        return KiroBackend(self.chat, self.pool, opts)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    pool, auth, http = await fake_pool(tmp_path, 2)
    yield Rig(pool, auth)
    await http.aclose()


async def run(backend: KiroBackend) -> list[list[Event]]:
    return [batch async for batch in backend.stream(CONV, input_tokens=10)]


def text(batches: list[list[Event]]) -> str:
    return "".join(ev.text for batch in batches for ev in batch if isinstance(ev, TextDelta))


def stops(batches: list[list[Event]]) -> list[MessageStop]:
    return [ev for batch in batches for ev in batch if isinstance(ev, MessageStop)]


# the failover loop ------------------------------------------------------------------------------
async def test_an_answer_goes_out_whole(rig: Rig) -> None:
    batches = await run(rig.backend([answer("Hel", "lo", pause_s=0.001)]))
    assert text(batches) == "Hello"
    assert [s.reason for s in stops(batches)] == ["end_turn"]
    assert rig.chat.tokens() == ["tok-p0-0"]
    assert rig.chat.posted[0].url == "https://q.test/generateAssistantResponse"
    assert all(r.closed for r in rig.chat.responses)


async def test_a_throttled_account_hands_over_to_the_next(rig: Rig) -> None:
    batches = await run(rig.backend([http_error(429, "Too many requests"), answer("ok")]))
    assert text(batches) == "ok"
    assert rig.chat.tokens() == ["tok-p0-0", "tok-p1-0"]
    assert health(rig.pool, "p0").strike_reason == "throttle"
    assert health(rig.pool, "p1").strikes == 0


async def test_the_request_s_own_fault_is_not_retried(rig: Rig) -> None:
    backend = rig.backend([http_error(400, "Improperly formed request."), answer("never")])
    with pytest.raises(GatewayError) as caught:
        await run(backend)
    assert caught.value.upstream_status == 400
    assert len(rig.chat.posted) == 1
    assert health(rig.pool, "p0").strikes == 0 and health(rig.pool, "p0").cooldown_until == 0


async def test_a_refused_token_is_refreshed_once_and_retried_on_the_same_account(
    rig: Rig,
) -> None:
    batches = await run(rig.backend([bearer_invalid(), answer("ok")]))
    assert text(batches) == "ok"
    assert rig.chat.tokens() == ["tok-p0-0", "tok-p0-1"]
    assert rig.auth.refreshes == {"p0": 1}


async def test_a_token_refused_twice_is_the_account_s_fault(rig: Rig) -> None:
    batches = await run(rig.backend([bearer_invalid(), bearer_invalid(), answer("ok")]))
    assert text(batches) == "ok"
    assert rig.chat.tokens() == ["tok-p0-0", "tok-p0-1", "tok-p1-0"]
    assert rig.auth.refreshes == {"p0": 1}
    assert health(rig.pool, "p0").reason == "auth"


async def test_requests_refused_together_share_one_refresh(tmp_path: Path) -> None:
    pool, auth, http = await fake_pool(tmp_path, 1)
    try:
        rig = Rig(pool, auth)

        def script(posted: Posted) -> Reply:
            return bearer_invalid() if posted.token == "tok-p0-0" else answer("ok")

        backend = rig.backend(script)
        results = await asyncio.gather(run(backend), run(backend), run(backend))
        assert [text(r) for r in results] == ["ok", "ok", "ok"]
        assert auth.refreshes == {"p0": 1}
        assert rig.chat.tokens().count("tok-p0-1") == 3
    finally:
        await http.aclose()


async def test_a_request_waits_for_a_resting_account(tmp_path: Path) -> None:
    pool, auth, http = await fake_pool(tmp_path, 1)
    try:
        rig = Rig(pool, auth)
        account = pool.get("p0")
        assert account is not None
        rest = GatewayError(ErrorKind.RATE_LIMITED, "slow down", retry_after=0.05)
        await pool.failed(account, rest)
        started = time.monotonic()
        batches = await run(rig.backend([answer("ok")], pool_wait_s=1.0))
        assert text(batches) == "ok" and time.monotonic() - started >= 0.04

        await pool.failed(account, rest)  # a second rest, and no time to wait for it
        backend = rig.backend([answer("never")], pool_wait_s=0.001)
        with pytest.raises(GatewayError) as caught:
            await run(backend)
        assert caught.value.retry_after is not None and rig.chat.posted == []
    finally:
        await http.aclose()


async def test_a_passing_fault_is_struck_when_the_request_is_over(rig: Rig) -> None:
    batches = await run(rig.backend([http_error(500, "boom"), answer("ok")]))
    assert text(batches) == "ok"
    assert (health(rig.pool, "p0").strikes, health(rig.pool, "p0").strike_reason) == (
        1,
        "passing",
    )


async def test_the_same_failure_from_two_accounts_is_the_request_s_and_strikes_nobody(
    rig: Rig,
) -> None:
    backend = rig.backend([http_error(500, "boom"), http_error(500, "boom"), answer("never")])
    with pytest.raises(GatewayError) as caught:
        await run(backend)
    assert caught.value.upstream_status == 500
    assert rig.chat.tokens() == ["tok-p0-0", "tok-p1-0"]
    assert health(rig.pool, "p0").strikes == 0 and health(rig.pool, "p1").strikes == 0


async def test_no_connection_fails_over(rig: Rig) -> None:
    refused = Reply(refuse=aiohttp.ConnectionTimeoutError())
    batches = await run(rig.backend([refused, answer("ok")]))
    assert text(batches) == "ok"
    assert health(rig.pool, "p0").last_error == "could not connect to Kiro (ConnectionTimeoutError)"


# the first-content hold -------------------------------------------------------------------------
async def test_the_first_batch_holds_the_first_content(rig: Rig) -> None:
    body: list[Step] = [*tail_frames()[:1], Pause(0.005), text_frame("ok"), *tail_frames()[1:]]
    batches = await run(rig.backend([Reply(body=body)]))
    assert any(isinstance(ev, TextDelta) for ev in batches[0])
    assert text(batches) == "ok"


@pytest.mark.parametrize(
    "failure",
    [
        Reply(body=[Pause(0.001), DROP]),
        Reply(body=[exception_frame("InternalServerException", "oops")]),
        Reply(body=[]),  # ended without content
        Reply(body=[text_frame("lost"), exception_frame()]),  # the same burst as the content
        Reply(body=[text_frame("lost"), text_frame("cut")[:9]]),  # then ends mid-frame
    ],
    ids=["dropped", "exception", "empty", "same-burst", "cut-frame"],
)
async def test_a_failure_before_the_answer_is_out_fails_over(rig: Rig, failure: Reply) -> None:
    batches = await run(rig.backend([failure, answer("ok")]))
    assert text(batches) == "ok"
    assert rig.chat.tokens() == ["tok-p0-0", "tok-p1-0"]


async def test_no_content_in_time_fails_over(rig: Rig) -> None:
    slow = answer("late")
    slow = Reply(body=[Pause(5.0), *slow.body])
    started = time.monotonic()
    batches = await run(rig.backend([slow, answer("ok")], first_event_timeout_s=0.1))
    assert text(batches) == "ok" and time.monotonic() - started < 1.0
    assert rig.chat.responses[0].closed


async def test_a_failure_after_the_first_content_ends_the_stream_without_a_finish(
    rig: Rig,
) -> None:
    backend = rig.backend([Reply(body=[text_frame("Hel"), Pause(0.005), DROP]), answer("x")])
    seen: list[list[Event]] = []
    with pytest.raises(GatewayError) as caught:
        async for batch in backend.stream(CONV, input_tokens=10):
            seen.append(batch)
    assert caught.value.kind is ErrorKind.UPSTREAM_PROTOCOL
    assert text(seen) == "Hel" and stops(seen) == []
    assert len(rig.chat.posted) == 1  # no retry once something went out


async def test_a_throttle_in_the_middle_of_an_answer_strikes_the_account(rig: Rig) -> None:
    body: list[Step] = [text_frame("Hel"), Pause(0.005), exception_frame("ThrottlingException")]
    with pytest.raises(GatewayError) as caught:
        await run(rig.backend([Reply(body=body)]))
    assert caught.value.kind is ErrorKind.RATE_LIMITED
    assert health(rig.pool, "p0").strike_reason == "throttle"


# the web search shares the refresh-and-retry ----------------------------------------------------
async def test_the_web_search_refreshes_a_refused_token_once(rig: Rig) -> None:
    found = (
        b'{"result": {"content": [{"type": "text", "text": '
        b'"{\\"results\\": [{\\"title\\": \\"T\\", \\"url\\": \\"https://x.test/\\"}]}"}]}}'
    )
    chat = FakeChatTransport([bearer_invalid(), Reply(body=[found[:20], Pause(0.001), found[20:]])])
    search = KiroWebSearch(chat, rig.pool, api_base="https://q.test")
    hits = await search.search("kiro")
    assert [h.url for h in hits] == ["https://x.test/"]
    assert chat.tokens() == ["tok-p0-0", "tok-p0-1"]
    assert chat.posted[0].url == "https://q.test/mcp"
    assert rig.auth.refreshes == {"p0": 1}


# fit() then stream(): the request measured is the one sent --------------------------------------
async def test_a_fitted_conversation_is_built_once_and_sent_as_a_fresh_build_would_be(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[Conversation] = []
    real = build_kiro_request

    def counting(conv: Conversation, **kw: Any) -> KiroRequest:
        built.append(conv)
        return real(conv, **kw)

    monkeypatch.setattr(backend_module, "build_kiro_request", counting)
    backend = rig.backend([answer("ok"), answer("again")])
    conv = backend.fit(CONV)
    assert text([b async for b in backend.stream(conv, input_tokens=10)]) == "ok"
    assert len(built) == 1
    expected = real(CONV, conversation_id=kiro_conversation_id(CONV), profile_arn=PROFILE_ARN)
    assert rig.chat.posted[0].body == expected.body
    assert list(rig.chat.posted[0].body) == list(expected.body)  # the same keys, in order
    await run(backend)  # streamed without fit(): built in _prepare, as before
    assert len(built) == 2 and rig.chat.posted[1].body == expected.body
