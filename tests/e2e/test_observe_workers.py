"""Issue 15 items 3 and 4 with `ki2api serve --workers 2` as a real subprocess, LOG_FORMAT=json.

A faulty pool (server errors before any content, expired tokens to refresh) takes a burst of
requests on both surfaces. Then: every scrape of /metrics, whichever worker answers it, counts
the whole gateway (prometheus-client's multiprocess files); the gateway's output is one JSON
object per line with one access line per request, carrying the request id the client got; and
no token, refresh token, API key, admin key or metrics token appears anywhere in that output.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.faultload import set_fault_rate, upstream_counts
from tests.support.procs import GatewayProc, PoolMember, chat_request, make_pool, pool_env

KEY = "observe-client-key-5f1c2e"
ADMIN = "observe-admin-key-9a7d3b"
METRICS = "observe-metrics-token-4e8a1f"
REQUESTS = 40
CHAT_ROUTES = {"/v1/chat/completions", "/v1/messages"}


def _scrape(url: str) -> tuple[float, float, float]:
    """(chat requests, upstream attempts, refreshes ok) in one scrape, on a new connection."""
    r = httpx.get(f"{url}/metrics", headers={"authorization": f"Bearer {METRICS}"}, timeout=10)
    assert r.status_code == 200, r.text
    requests = attempts = refreshes = 0.0
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            if s.name == "ki2api_requests_total" and s.labels["route"] in CHAT_ROUTES:
                requests += s.value
            elif s.name == "ki2api_upstream_attempts_total":
                attempts += s.value
            elif s.name == "ki2api_token_refreshes_total" and s.labels["result"] == "ok":
                refreshes += s.value
    return requests, attempts, refreshes


async def _burst(url: str) -> list[tuple[int, str, str | None]]:
    """(status, x-request-id got, id sent or None) of each request."""

    async def one(client: httpx.AsyncClient, i: int) -> tuple[int, str, str | None]:
        args = chat_request(f"observe {i}", anthropic=i % 2 == 1, stream=i % 4 >= 2, key=KEY)
        sent = f"client-id-{i}" if i % 3 == 0 else None
        if sent is not None:
            args["headers"] = {**args["headers"], "x-request-id": sent}
        async with client.stream("POST", **args) as r:
            await r.aread()
        return r.status_code, r.headers["x-request-id"], sent

    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return list(await asyncio.gather(*(one(client, i) for i in range(REQUESTS))))


def _secrets(members: list[PoolMember], before: list[dict[str, Any]]) -> set[str]:
    """Every key and token of the run: the files' tokens before and after (refreshed ones)."""
    found = {KEY, ADMIN, METRICS}
    for data in [*before, *(json.loads(m.token_file.read_text()) for m in members)]:
        found |= {str(data[k]) for k in ("accessToken", "refreshToken") if data.get(k)}
    return found


@pytest.mark.long(15)
def test_workers_metrics_are_whole_and_json_logs_name_every_request_without_secrets(
    tmp_path: Path, emulator_url: str
) -> None:
    home, cwd, creds, data = (tmp_path / n for n in ("home", "cwd", "creds", "data"))
    for p in (home, cwd, creds):
        p.mkdir()
    members = make_pool(emulator_url, creds, ["o0", "o1", "o2"], expired=True)
    set_fault_rate(emulator_url, members, 0.3, faults=["server_error"], seed=1515)
    before_files = [json.loads(m.token_file.read_text()) for m in members]
    calls_before, _ = upstream_counts(emulator_url, members)
    env = pool_env(
        emulator_url,
        creds,
        data,
        KEY,
        ADMIN_KEY=ADMIN,
        KI2API_METRICS_TOKEN=METRICS,
        LOG_FORMAT="json",
        LOG_LEVEL="info",
        KI2API_POOL_WAIT_S="0.5",
    )
    gw = GatewayProc.serve(home, cwd, workers=2, **env)
    try:
        results = asyncio.run(_burst(gw.url))
        calls = upstream_counts(emulator_url, members)[0] - calls_before
        scrapes = {_scrape(gw.url) for _ in range(8)}
        assert scrapes == {(REQUESTS, calls, 3)}, gw.output()[-3000:]
        assert all(status in (200, 502, 503, 529) for status, _, _ in results), results
    finally:
        gw.stop()

    output = gw.output()
    lines = [line for line in output.splitlines() if line.strip() and line != "--- stderr ---"]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    access = [r for r in records if r["logger"] == "ki2api.access" and r["route"] in CHAT_ROUTES]
    assert sorted(r["request_id"] for r in access) == sorted(rid for _, rid, _ in results)
    for status, rid, sent in results:
        assert sent is None or rid == sent
        [line] = [r for r in access if r["request_id"] == rid]
        assert line["status"] == status and line["key"] and line["duration_ms"] > 0
        assert line["attempts"] >= 1 and line["model"]
    assert sum(r["attempts"] for r in access) == calls
    leaked = [s for s in _secrets(members, before_files) if s in output]
    assert not leaked, f"{len(leaked)} secret(s) in the gateway's output"
