"""Issue 13 part A end to end: the per-account concurrency cap, the pace and the wait queue.

Clients (official SDKs, raw httpx) -> the gateway under uvicorn -> the Kiro emulator, whose
`streams_max` per account is the judge of how many requests ran on an account at once, and
whose request log (`at`) shows how starts were spread. Streams are held open with the
emulator's `first_delay_ms` / `delay_ms` directives.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from ki2api.cli.accounts_commands import run_accounts
from ki2api.cli.main import build_parser
from tests.conftest import API_KEY, Gateway, gateway_settings
from tests.support.pool_accounts import (
    Member,
    emulator_counters,
    health_of,
    make_pool,
    requests_of,
    start_pool_gateway,
    wait_for,
)

MODEL = "claude-sonnet-4-20250514"
OPENAI_AUTH = {"Authorization": f"Bearer {API_KEY}"}
ANTHROPIC_AUTH = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}


def emu(text: str, **directive: Any) -> str:
    return f"{text} <emu>{json.dumps(directive)}</emu>"


async def _ask(client: httpx.AsyncClient, i: int, text: str) -> tuple[int, str]:
    """One chat call, alternating dialects and streaming; (status, the whole body)."""
    messages = [{"role": "user", "content": text}]
    stream = i % 4 >= 2
    if i % 2:
        body = {"model": MODEL, "max_tokens": 64, "messages": messages, "stream": stream}
        r = await client.post("/v1/messages", json=body, headers=ANTHROPIC_AUTH)
    else:
        body = {"model": MODEL, "messages": messages, "stream": stream}
        r = await client.post("/v1/chat/completions", json=body, headers=OPENAI_AUTH)
    return r.status_code, r.text


async def _burst(url: str, n: int, text: str) -> list[tuple[int, str]]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        return list(await asyncio.gather(*(_ask(client, i, text) for i in range(n))))


def _fresh_max(emulator_url: str, members: list[Member]) -> dict[str, int]:
    return {m.pool_id: emulator_counters(emulator_url, m)["streams_max"] for m in members}


def _pool(emulator_url: str, tmp_path: Path, n: int) -> list[Member]:
    return make_pool(emulator_url, tmp_path, [{} for _ in range(n)])


def test_40_concurrent_requests_over_2_accounts_with_cap_2(
    gateway_factory: Any, emulator_url: str, tmp_path: Path
) -> None:
    members = _pool(emulator_url, tmp_path, 2)
    gw = start_pool_gateway(gateway_factory, members, tmp_path, account_max_inflight=2)
    started = time.monotonic()
    results = asyncio.run(_burst(gw.url, 40, emu("busy", first_delay_ms=60)))
    took = time.monotonic() - started
    assert [s for s, _ in results] == [200] * 40, [b for s, b in results if s != 200][:2]
    assert _fresh_max(emulator_url, members) == {"p0": 2, "p1": 2}  # never more, and reached
    assert took < gw.settings.queue_wait_s
    served = sum(emulator_counters(emulator_url, m)["served"] for m in members)
    assert served == 40
    assert wait_for(lambda: all(a["inflight"] == 0 for a in health_of(gw).values()))


def test_a_request_that_gets_no_slot_in_time_is_refused_with_429_and_retry_after(
    gateway_factory: Any, emulator_url: str, tmp_path: Path
) -> None:
    members = _pool(emulator_url, tmp_path, 1)
    gw = start_pool_gateway(
        gateway_factory, members, tmp_path, account_max_inflight=1, queue_wait_s=0.3
    )

    async def run() -> None:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
            holder = asyncio.create_task(_ask(client, 0, emu("hold", first_delay_ms=3000)))
            assert await _until(lambda: emulator_counters(emulator_url, members[0])["streams_now"])
            await asyncio.to_thread(_refused_in_both_dialects, gw)
            status, _ = await holder
            assert status == 200

    asyncio.run(run())


def _refused_in_both_dialects(gw: Gateway) -> None:
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as oai:
        gw.openai().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "queued"}]
        )
    assert time.monotonic() - started >= 0.3  # it waited in the queue first
    assert oai.value.response.headers["retry-after"] == "1"
    assert oai.value.code == "rate_limit_exceeded"
    assert "concurrency cap" in oai.value.message
    with pytest.raises(anthropic.RateLimitError) as ant:
        gw.anthropic().messages.create(
            model=MODEL, max_tokens=32, messages=[{"role": "user", "content": "queued"}]
        )
    assert ant.value.response.headers["retry-after"] == "1"
    assert ant.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert "concurrency cap" in ant.value.body["error"]["message"]  # type: ignore[index]


async def _until(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return True
        await asyncio.sleep(0.02)
    return False


def test_a_full_queue_refuses_at_once(
    gateway_factory: Any, emulator_url: str, tmp_path: Path
) -> None:
    members = _pool(emulator_url, tmp_path, 1)
    gw = start_pool_gateway(gateway_factory, members, tmp_path, account_max_inflight=1, queue_max=0)

    async def run() -> None:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
            holder = asyncio.create_task(_ask(client, 0, emu("hold", first_delay_ms=1500)))
            assert await _until(lambda: emulator_counters(emulator_url, members[0])["streams_now"])
            started = time.monotonic()
            status, body = await _ask(client, 0, "no room")
            assert status == 429 and time.monotonic() - started < 1.0
            assert "queue is full" in body
            assert (await holder)[0] == 200

    asyncio.run(run())


def _set_account(settings: Any, *argv: str) -> None:
    args = build_parser().parse_args(["accounts", "set", *argv])
    assert run_accounts(settings, args) == 0


def test_an_accounts_own_cap_wins_over_the_default_and_shows(
    gateway_factory: Any, emulator_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    members = _pool(emulator_url, tmp_path, 2)
    settings = gateway_settings(
        emulator_url,
        members[0].account,
        tmp_path,
        kiro_creds_dir=tmp_path / "creds",
        kiro_creds_file=None,
        account_max_inflight=3,
    )
    _set_account(settings, "p0", "--max-inflight", "1", "--pace", "6000")
    assert "p0: cap 1, pace 6000/min" in capsys.readouterr().out
    gw = start_pool_gateway(gateway_factory, members, tmp_path, account_max_inflight=3)
    results = asyncio.run(_burst(gw.url, 16, emu("own cap", first_delay_ms=80)))
    assert [s for s, _ in results] == [200] * 16
    assert _fresh_max(emulator_url, members) == {"p0": 1, "p1": 3}
    pool = health_of(gw)
    assert (pool["p0"]["max_inflight"], pool["p0"]["pace_rpm"]) == (1, 6000)
    assert (pool["p1"]["max_inflight"], pool["p1"]["pace_rpm"]) == (3, 0)
    args = build_parser().parse_args(["accounts", "list", "--json"])
    assert run_accounts(settings, args) == 0
    listed = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed["p0"]["max_inflight"] == 1 and listed["p0"]["pace_rpm"] == 6000
    assert listed["p1"]["max_inflight"] == 3 and listed["p1"]["inflight"] == 0
    _set_account(settings, "p0", "--max-inflight", "default", "--pace", "default")
    assert "p0: cap 3 (pool default), no pace" in capsys.readouterr().out


def test_the_pace_spreads_request_starts(
    gateway_factory: Any, emulator_url: str, tmp_path: Path
) -> None:
    members = _pool(emulator_url, tmp_path, 1)
    gw = start_pool_gateway(
        gateway_factory, members, tmp_path, account_max_inflight=0, account_pace_rpm=300
    )
    results = asyncio.run(_burst(gw.url, 6, "paced"))  # all at once: 0.2 s apart upstream
    assert [s for s, _ in results] == [200] * 6
    starts = sorted(q["at"] for q in requests_of(emulator_url, members))
    assert len(starts) == 6
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    # 60 / 300 s between two starts; an arrival may lag its start by a scheduling delay (a
    # busy machine), so each gap is allowed less, the whole span only that delay twice
    assert min(gaps) >= 0.1 and starts[-1] - starts[0] >= 5 * 0.2 - 0.1, gaps


def test_a_client_gone_while_queued_leaves_the_queue(
    gateway_factory: Any, emulator_url: str, tmp_path: Path
) -> None:
    members = _pool(emulator_url, tmp_path, 1)
    gw = start_pool_gateway(gateway_factory, members, tmp_path, account_max_inflight=1)

    def queue() -> dict[str, Any]:
        body = httpx.get(f"{gw.url}/health", headers=ANTHROPIC_AUTH).json()
        return dict(body["queue"])

    async def run() -> None:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
            holder = asyncio.create_task(_ask(client, 0, emu("hold", first_delay_ms=1500)))
            assert await _until(lambda: emulator_counters(emulator_url, members[0])["streams_now"])
            gone = asyncio.create_task(_ask(client, 2, "I will not wait"))
            assert await _until(lambda: queue()["waiting"] == 1)
            assert health_of(gw)["p0"]["inflight"] == 1
            gone.cancel()  # the client closes its connection while queued
            assert await _until(lambda: queue()["waiting"] == 0, timeout=5)
            assert (await holder)[0] == 200
        served = emulator_counters(emulator_url, members[0])["served"]
        assert served == 1  # the gone request never reached Kiro

    asyncio.run(run())
    assert queue() == {"waiting": 0, "max": 500}
