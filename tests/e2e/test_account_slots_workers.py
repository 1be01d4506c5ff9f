"""The per-account cap with `ki2api serve --workers 2` (a real subprocess): two worker processes
count one account's requests in flight together, through slot leases in the shared SQLite store.
Each worker serves half of the requests (each on a connection it was seen to hold)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from tests.support.procs import GatewayProc, emulator_stats, make_pool, pool_env

KEY = "slots-workers-key"
REQUESTS = 40


async def _ask(client: httpx.AsyncClient, i: int) -> int:
    text = 'cap <emu>{"first_delay_ms": 60}</emu>'
    messages = [{"role": "user", "content": text}]
    if i % 2:
        body = {"model": "claude-sonnet-4-6", "max_tokens": 32, "messages": messages}
        headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
        r = await client.post("/v1/messages", json=body, headers=headers)
    else:
        body = {"model": "claude-sonnet-4-20250514", "messages": messages, "stream": True}
        r = await client.post(
            "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}
        )
    return r.status_code


async def _pinned(url: str, per_worker: int) -> dict[int, list[httpx.AsyncClient]]:
    """Clients of one keep-alive connection each, `per_worker` held by each worker process
    (the kernel decides who accepts a connection; /health names the worker that answered)."""
    pinned: dict[int, list[httpx.AsyncClient]] = {}
    for _ in range(100):
        fresh = [
            httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=1))
            for _ in range(8)
        ]
        answers = await asyncio.gather(
            *(c.get("/health", headers={"x-api-key": KEY}) for c in fresh)
        )
        for client, answer in zip(fresh, answers, strict=True):
            held = pinned.setdefault(int(answer.json()["pid"]), [])
            if len(held) < per_worker:
                held.append(client)
            else:
                await client.aclose()
        if len(pinned) == 2 and all(len(c) == per_worker for c in pinned.values()):
            return pinned
    raise AssertionError(f"the connections went to: { {p: len(c) for p, c in pinned.items()} }")


async def _burst(url: str) -> list[int]:
    pinned = await _pinned(url, REQUESTS // 2)
    clients = [c for held in pinned.values() for c in held]
    try:
        return list(await asyncio.gather(*(_ask(c, i) for i, c in enumerate(clients))))
    finally:
        for c in clients:
            await c.aclose()


def test_the_cap_holds_for_the_account_across_two_workers(
    tmp_path: Path, emulator_url: str
) -> None:
    home, cwd, creds, data = (tmp_path / d for d in ("home", "cwd", "creds", "data"))
    for d in (home, cwd, creds):
        d.mkdir()
    members = make_pool(emulator_url, creds, ["s0", "s1"])
    env = pool_env(
        emulator_url,
        creds,
        data,
        KEY,
        KI2API_ACCOUNT_MAX_INFLIGHT="2",
    )
    gw = GatewayProc.serve(home, cwd, workers=2, **env)
    try:
        statuses = asyncio.run(_burst(gw.url))  # half of them on each worker
        assert statuses == [200] * REQUESTS, gw.output()[-3000:]
        stats = emulator_stats(emulator_url, members)
        assert {k: v["streams_max"] for k, v in stats.items()} == {"s0": 2, "s1": 2}
        assert sum(v["served"] for v in stats.values()) == REQUESTS
        health = httpx.get(f"{gw.url}/health", headers={"x-api-key": KEY}).json()
        assert {a["id"]: a["max_inflight"] for a in health["pool"]} == {"s0": 2, "s1": 2}
        assert all(a["inflight"] == 0 for a in health["pool"]), json.dumps(health)
    finally:
        gw.stop()
