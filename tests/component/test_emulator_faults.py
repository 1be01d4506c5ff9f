"""Per-account faults changeable at run time and random fault injection (docs/emulator.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import pytest

from kiro_emulator import EmulatorConfig, create_app, parse_args
from kiro_emulator.script import Directives, Reply
from kiro_emulator.stream import StreamFaults, build_plan, stream_body
from tests.component.test_emulator_kit import (
    Emu,
    GatedSleep,
    chat_body,
    emu,
    events,
    messages,
    running,
    text_of,
)

EVENTSTREAM = "application/vnd.amazon.eventstream"
CLOSING = {"meteringEvent", "contextUsageEvent"}

HTTP_FAULTS: dict[str, tuple[int, dict[str, Any], str | None]] = {
    "server_error": (
        500,
        {
            "message": (
                "Encountered an unexpected error when processing the request, please try again."
            ),
            "reason": None,
        },
        "InternalServerException",
    ),
    "unavailable": (
        503,
        {
            "__type": "ServiceUnavailableException",
            "message": "The service is temporarily unavailable. Please try again later.",
        },
        "ServiceUnavailableException",
    ),
    "high_load": (
        500,
        {
            "error": (
                "Encountered unexpectedly high load when processing the request, please try again."
            )
        },
        None,
    ),
    "throttled": (
        429,
        {
            "message": "I am experiencing high traffic, please try again shortly.",
            "reason": "INSUFFICIENT_MODEL_CAPACITY",
        },
        "ThrottlingException",
    ),
}


def patch(e: Emu, account: str = "acct-1", **behaviour: Any) -> httpx.Response:
    r = e.client.patch(e.base + f"/_emulator/accounts/{account}", json={"behaviour": behaviour})
    return r


def stats(e: Emu, account: str = "acct-1") -> dict[str, int]:
    return dict(e.client.get(e.base + "/_emulator/stats").json()["accounts"][account])


def log(e: Emu) -> list[dict[str, Any]]:
    return list(e.client.get(e.base + "/_emulator/requests").json()["requests"])


def kinds(raw: bytes) -> list[str]:
    return [k for k, _ in events(raw)]


@pytest.mark.parametrize(("key", "expected"), HTTP_FAULTS.items(), ids=HTTP_FAULTS)
def test_http_fault_status_body_and_type(
    key: str, expected: tuple[int, dict[str, Any], str | None]
) -> None:
    with running() as e:
        assert patch(e, **{key: True}).json()["behaviour"][key] is True
        r = e.chat("hi")
        assert (r.status_code, r.json(), r.headers.get("x-amzn-errortype")) == expected
        assert "retry-after" not in r.headers
        assert log(e)[-1]["fault"] == key
        assert stats(e)["faults"] == 1


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [({"retry_after_s": 7}, "7"), ({}, None), ({"retry_after_s": None}, None)],
    ids=["set", "default-off", "null"],
)
def test_throttled_retry_after_header(behaviour: dict[str, Any], expected: str | None) -> None:
    with running() as e:
        patch(e, throttled=True, **behaviour)
        r = e.chat("hi")
        assert r.status_code == 429
        assert r.headers.get("retry-after") == expected


def test_patch_flips_an_account_to_throttled_and_back_mid_run() -> None:
    with running(EmulatorConfig(accounts=2)) as e:
        assert e.chat("one").status_code == 200
        patch(e, "acct-1", throttled=True)
        assert [e.chat("two").status_code, e.chat("x", account="acct-2").status_code] == [429, 200]
        patch(e, "acct-1", throttled=False)
        assert e.chat("three").status_code == 200
        assert (stats(e)["chat_requests"], stats(e)["served"], stats(e)["faults"]) == (3, 2, 1)
        assert stats(e, "acct-2")["faults"] == 0


def test_a_stream_in_flight_is_not_affected_by_a_flip() -> None:
    gate = GatedSleep(open_=False)
    with running(sleep=gate) as e:
        patch(e, first_event_delay_ms=100)
        with e.client.stream(
            "POST", e.base + "/generateAssistantResponse", json=chat_body("slow"), headers=e.auth()
        ) as r:
            assert r.status_code == 200  # headers arrive while the first frame waits
            patch(e, throttled=True, first_event_delay_ms=0)
            gate.gate.set()
            raw = r.read()
        assert text_of(events(raw)) == "Echo: slow"
        assert e.chat("next").status_code == 429


def test_drop_connection_is_a_network_error_not_a_response() -> None:
    with running() as e:
        patch(e, drop_connection=True)
        with pytest.raises(httpx.RemoteProtocolError):
            e.chat("hi")
        assert log(e)[-1]["fault"] == "drop_connection"
        assert log(e)[-1]["status"] is None
        patch(e, drop_connection=False)
        assert e.chat("hi").status_code == 200  # the server itself is fine
        assert (stats(e)["chat_requests"], stats(e)["faults"]) == (2, 1)


def test_drop_connection_seen_by_aiohttp() -> None:
    async def call(base: str, token: str) -> None:
        async with aiohttp.ClientSession() as session:
            await session.post(
                base + "/generateAssistantResponse",
                data=orjson.dumps(chat_body("hi")),
                headers={"Authorization": f"Bearer {token}"},
            )

    with running() as e:
        patch(e, drop_connection=True)
        with pytest.raises(aiohttp.ServerDisconnectedError):
            asyncio.run(call(e.base, e.token()))


def test_empty_stream_is_200_eventstream_with_no_bytes() -> None:
    with running() as e:
        patch(e, empty_stream=True)
        r = e.chat("hi")
        assert (r.status_code, r.headers["content-type"], r.content) == (200, EVENTSTREAM, b"")
        assert log(e)[-1]["fault"] == "empty_stream"


def test_end_without_closing_ends_on_a_frame_boundary_without_the_tail() -> None:
    with running() as e:
        whole = e.chat("hello there").content
        patch(e, end_without_closing=True)
        raw = e.chat("hello there").content
        assert CLOSING <= set(kinds(whole))
        assert kinds(raw) == [k for k in kinds(whole) if k not in CLOSING]
        assert raw == whole[: len(raw)]  # the content frames, whole, and nothing after them
        assert kinds(whole[len(raw) :]) == ["contextUsageEvent", "meteringEvent"]
        assert text_of(events(raw)) == "Echo: hello there"


def test_truncate_behaviour_cuts_like_the_directive() -> None:
    with running() as e:
        by_directive = e.chat(emu({"truncate_after_events": 3}, "hi")).content
        patch(e, truncate_after_events=3)
        by_behaviour = e.chat("hi").content
        assert by_behaviour == by_directive
        assert len(events(by_behaviour)) == 3
        assert log(e)[-1]["fault"] == "truncate"


def test_first_event_delay_sleeps_once_before_the_first_frame() -> None:
    with running() as e:
        patch(e, first_event_delay_ms=250)
        r = e.chat("hi")
        assert e.sleep.calls == [0.25]
        assert CLOSING <= set(kinds(r.content))
        assert log(e)[-1]["fault"] == "first_event_delay"


def test_stall_after_events_sleeps_once_and_the_stream_completes() -> None:
    with running() as e:
        r = patch(e, stall_after_events={"events": 2, "ms": 500})
        assert r.json()["behaviour"]["stall_after_events"] == {"events": 2, "ms": 500.0}
        raw = e.chat("hi").content
        assert e.sleep.calls == [0.5]
        assert text_of(events(raw)) == "Echo: hi" and CLOSING <= set(kinds(raw))
        assert log(e)[-1]["fault"] == "stall"


async def _frames_before_each_sleep(faults: StreamFaults, total_text: int) -> list[int]:
    directives = Directives(events=total_text)
    plan = build_plan(Reply("abcdefgh", [], []), directives, "claude-sonnet-4.5", 10, faults)
    seen: list[int] = []
    sent = bytearray()

    async def sleep(_: float) -> None:
        seen.append(len(messages(bytes(sent))))

    async for piece in stream_body(plan, sleep):
        sent += piece
    return seen


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        (StreamFaults(stall_after=2, stall_s=1.0), [2]),
        (StreamFaults(stall_after=0, stall_s=1.0), [0]),
        (StreamFaults(stall_after=99, stall_s=1.0), [6]),  # past the end: stall before the end
        (StreamFaults(first_delay_s=1.0), [0]),
        (StreamFaults(first_delay_s=1.0, stall_after=3, stall_s=1.0), [0, 3]),
        (StreamFaults(stall_after=2, stall_s=1.0, no_tail=True), [2]),
    ],
    ids=["after-2", "after-0", "past-end", "first-delay", "both", "no-tail"],
)
def test_stall_position(faults: StreamFaults, expected: list[int]) -> None:
    assert asyncio.run(_frames_before_each_sleep(faults, 4)) == expected


def test_fault_rate_zero_never_faults() -> None:
    with running() as e:
        patch(e, fault_rate=0, faults=["server_error"])
        assert {e.chat(f"m{i}").status_code for i in range(20)} == {200}
        assert stats(e)["faults"] == 0
        assert {entry["fault"] for entry in log(e)} == {None}


def test_fault_rate_one_always_faults_from_the_list() -> None:
    with running() as e:
        patch(e, fault_rate=1, faults=["server_error", "unavailable"], fault_seed=3)
        statuses = [e.chat(f"m{i}").status_code for i in range(20)]
        assert set(statuses) <= {500, 503} and len(statuses) == 20
        assert stats(e)["faults"] == 20 and stats(e)["served"] == 0
        assert {entry["fault"] for entry in log(e)} <= {"server_error", "unavailable"}


def _outcome(e: Emu, i: int, account: str = "acct-1") -> tuple[int | str, str | None]:
    try:
        r = e.chat(f"m{i}", account=account)
    except httpx.TransportError:
        return "network", log(e)[-1]["fault"]
    closed = r.status_code == 200 and CLOSING <= set(kinds(r.content))
    return (r.status_code if not closed else "ok"), log(e)[-1]["fault"]


MIX = {"fault_rate": 0.5, "fault_delay_ms": 10}


def _run_mix(e: Emu, n: int = 40) -> list[tuple[int | str, str | None]]:
    return [_outcome(e, i) for i in range(n)]


def test_a_seeded_mix_repeats_exactly() -> None:
    with running() as e:
        patch(e, fault_seed=7, **MIX)
        first = _run_mix(e)
        patch(e, fault_seed=7)  # setting the seed restarts the sequence
        again = _run_mix(e)
        patch(e, fault_seed=8)
        other = _run_mix(e)
    with running() as fresh:
        patch(fresh, fault_seed=7, **MIX)
        elsewhere = _run_mix(fresh)
    assert first == again == elsewhere
    assert other != first
    fired = {f for _, f in first if f}
    assert len(fired) >= 4 and any(f is None for _, f in first)


def test_without_fault_seed_the_mix_follows_the_emulator_seed_and_reset() -> None:
    with running(EmulatorConfig(accounts=2, seed=5)) as e:
        patch(e, **MIX)
        patch(e, "acct-2", **MIX)
        first = _run_mix(e, 20)
        e.client.post(e.base + "/_emulator/reset")
        mixed = [(_outcome(e, i, "acct-2"), _outcome(e, i)) for i in range(20)]
        assert [mine for _, mine in mixed] == first  # acct-2's traffic does not shift acct-1's
    with running(EmulatorConfig(accounts=2, seed=5)) as again:
        patch(again, **MIX)
        assert _run_mix(again, 20) == first
    with running(EmulatorConfig(accounts=2, seed=6)) as other:
        patch(other, **MIX)
        assert _run_mix(other, 20) != first


def test_random_faults_cover_every_name_and_stats_count_them() -> None:
    with running() as e:
        patch(e, fault_rate=1, fault_seed=1, fault_delay_ms=10)
        outcomes = _run_mix(e, 80)
        names = [f for _, f in outcomes]
        assert set(names) == {
            "throttled",
            "quota_exhausted",
            "server_error",
            "unavailable",
            "high_load",
            "empty_stream",
            "end_without_closing",
            "truncate",
            "drop_connection",
            "first_event_delay",
            "stall",
        }
        s = stats(e)
        assert (s["chat_requests"], s["faults"]) == (80, 80)
        served = sum(1 for status, _ in outcomes if status not in (402, 429, 500, 503, "network"))
        assert s["served"] == served
        e.client.post(e.base + "/_emulator/reset")
        assert stats(e)["faults"] == 0


def test_behaviour_faults_win_over_random_ones() -> None:
    with running() as e:
        patch(e, fault_rate=1, faults=["server_error"], quota_exhausted=True)
        r = e.chat("hi")
        assert r.status_code == 402 and log(e)[-1]["fault"] == "quota_exhausted"


def test_stream_faults_apply_only_to_valid_requests() -> None:
    with running() as e:
        patch(e, empty_stream=True)
        r = e.chat(body=chat_body("hi", model="no-such-model"))
        assert r.status_code == 400
        assert (stats(e)["faults"], log(e)[-1]["fault"]) == (0, None)


def test_quota_reset_at_is_reported_by_get_usage_limits() -> None:
    with running() as e:
        reset_at = int(e.clock.now) + 3 * 86_400 + 60
        patch(e, quota_exhausted=True, quota_reset_at=reset_at)
        body = e.client.get(e.base + "/getUsageLimits", headers=e.auth()).json()
        assert body["nextDateReset"] == reset_at
        assert body["usageBreakdownList"][0]["nextDateReset"] == reset_at
        assert body["daysUntilReset"] == 3


@pytest.mark.parametrize(
    "behaviour",
    [
        {"fault_rate": 1.5},
        {"fault_rate": True},
        {"faults": ["nope"]},
        {"faults": "server_error"},
        {"fault_seed": "x"},
        {"stall_after_events": {"events": 1}},
        {"stall_after_events": {"events": True, "ms": 1}},
        {"stall_after_events": {"events": 1, "ms": -1}},
        {"truncate_after_events": -1},
        {"retry_after_s": 1.5},
        {"quota_reset_at": -1},
        {"first_event_delay_ms": "1"},
        {"server_error": 1},
        {"fault": 1},
    ],
    ids=[
        "rate-over-1",
        "rate-bool",
        "unknown-fault",
        "faults-not-list",
        "seed-str",
        "stall-missing-ms",
        "stall-bool",
        "stall-negative",
        "truncate-negative",
        "retry-after-float",
        "reset-negative",
        "delay-str",
        "flag-int",
        "unknown-key",
    ],
)
def test_bad_fault_behaviour_is_refused(behaviour: dict[str, Any]) -> None:
    with running() as e:
        r = patch(e, **behaviour)
        assert r.status_code == 400
        assert next(iter(behaviour)) in r.json()["error"]
        created = e.client.post(e.base + "/_emulator/accounts", json={"behaviour": behaviour})
        assert created.status_code == 400


def test_new_accounts_can_start_with_faults_and_list_them() -> None:
    with running() as e:
        body = {"count": 1, "behaviour": {"fault_rate": 0.25, "faults": ["truncate"]}}
        made = e.client.post(e.base + "/_emulator/accounts", json=body).json()["accounts"]
        behaviour = made[0]["behaviour"]
        assert (behaviour["fault_rate"], behaviour["faults"]) == (0.25, ["truncate"])
        assert behaviour["stall_after_events"] is None and behaviour["server_error"] is False


def test_cli_accounts_credentials_dir_and_start_up_behaviour(tmp_path: Path) -> None:
    behaviour = '{"fault_rate": 0.5, "faults": ["truncate"], "retry_after_s": 3}'
    argv = ["--accounts", "3", "--credentials-dir", str(tmp_path), "--behaviour", behaviour]
    options = parse_args(argv)
    app = create_app(options.config)
    state = app.state.emulator
    for i in (1, 2, 3):
        token = orjson.loads((tmp_path / f"acct-{i}" / "kiro-auth-token.json").read_bytes())
        account = state.authenticate(token["accessToken"])
        assert account is not None and account.id == f"acct-{i}"
        b = account.behaviour
        assert (b.fault_rate, b.faults, b.retry_after_s) == (0.5, ("truncate",), 3)


@pytest.mark.parametrize(
    "raw",
    ['{"fault_rate": 2}', '{"nope": true}', "[1]", "{"],
    ids=["bad-value", "unknown-key", "not-object", "not-json"],
)
def test_cli_rejects_a_bad_start_up_behaviour(raw: str) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--behaviour", raw])
