"""Issue 15 item 3 end to end: `/metrics` after traffic with faults, read with Prometheus's parser.

The official SDKs -> the gateway on uvicorn -> the emulator, with a pool whose accounts fail a
share of their calls (server errors before any content: each is a failed attempt, and the
request fails over). The counters must match what the clients got and what the emulator saw.
The gateway runs in this process, so its counters are this process's: every check compares a
scrape before the traffic with one after it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import API_KEY, Gateway
from tests.support.pool_accounts import (
    Member,
    emulator_counters,
    make_pool,
    start_pool_gateway,
)

MODEL = "claude-sonnet-4-20250514"
TOKEN = "metrics-token-for-tests"
CHAT_ROUTES = ("/v1/chat/completions", "/v1/messages")


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(gw: Gateway, token: str = TOKEN) -> Samples:
    r = httpx.get(f"{gw.url}/metrics", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: Samples, name: str, **match: str) -> float:
    return sum(
        v
        for (n, labels), v in samples.items()
        if n == name and all(dict(labels).get(k) == want for k, want in match.items())
    )


def delta(before: Samples, after: Samples, name: str, **match: str) -> float:
    return total(after, name, **match) - total(before, name, **match)


def upstream(gw: Gateway, members: list[Member]) -> tuple[int, int]:
    stats = [emulator_counters(gw.emulator_url, m) for m in members]
    return sum(s["chat_requests"] for s in stats), sum(s["faults"] for s in stats)


def one_request(gw: Gateway, n: int, seen: dict[str, Any]) -> None:
    """One chat call through an SDK; notes what the client saw (status, tokens)."""
    text = f"metrics {n}"
    try:
        if n % 2 == 0:
            reply = gw.openai().chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": text}]
            )
            assert reply.usage is not None
            seen["in"] += reply.usage.prompt_tokens
            seen["out"] += reply.usage.completion_tokens
        else:
            msg = gw.anthropic().messages.create(
                model=MODEL, max_tokens=100, messages=[{"role": "user", "content": text}]
            )
            seen["in"] += msg.usage.input_tokens
            seen["out"] += msg.usage.output_tokens
        seen["ok"] += 1
    except (openai.APIStatusError, anthropic.APIStatusError) as exc:
        seen["failed"] += 1
        seen["statuses"].append(exc.status_code)


def test_counters_match_the_clients_and_the_emulator_after_faults(
    gateway_factory: Any, emulator_url: str, tmp_path: Path
) -> None:
    faulty = {"fault_rate": 0.5, "faults": ["server_error"], "usage_limit": 1000}
    behaviours = [{**faulty, "fault_seed": 1500 + i} for i in range(3)]
    members = make_pool(emulator_url, tmp_path, behaviours, expired=[True, True, True])
    gw = start_pool_gateway(
        gateway_factory, members, tmp_path, metrics_token=TOKEN, pool_wait_s=0.5
    )
    before = scrape(gw)
    calls_before, faults_before = upstream(gw, members)
    seen: dict[str, Any] = defaultdict(int, statuses=[])
    stream_chunks = 0
    for n in range(24):
        one_request(gw, n, seen)
    with gw.openai().chat.completions.with_streaming_response.create(
        model=MODEL, messages=[{"role": "user", "content": "a stream"}], stream=True
    ) as response:
        stream_chunks = sum(1 for line in response.iter_lines() if line.startswith("data:"))
    after = scrape(gw)
    calls, faults = upstream(gw, members)
    calls, faults = calls - calls_before, faults - faults_before

    assert faults > 0 and stream_chunks > 0 and seen["ok"] > 0
    requests = sum(delta(before, after, "ki2api_requests_total", route=r) for r in CHAT_ROUTES)
    assert requests == 25
    ok = sum(
        delta(before, after, "ki2api_requests_total", route=r, outcome="ok") for r in CHAT_ROUTES
    )
    assert ok == seen["ok"] + 1  # + the stream
    # every upstream call is one attempt; every fault a failed one; each failover one more try
    attempts = delta(before, after, "ki2api_upstream_attempts_total")
    assert attempts == calls
    failed = delta(before, after, "ki2api_upstream_attempts_total", result="upstream_unavailable")
    assert failed == attempts - delta(before, after, "ki2api_upstream_attempts_total", result="ok")
    assert failed == faults
    failovers = delta(before, after, "ki2api_failovers_total")
    assert attempts == 25 + failovers  # each request reached an account at least once
    by_kind = delta(before, after, "ki2api_failovers_total", reason="upstream_unavailable")
    assert by_kind == failovers
    assert delta(before, after, "ki2api_tokens_total", direction="out") >= seen["out"] > 0
    assert delta(before, after, "ki2api_tokens_total", direction="in") >= seen["in"] > 0
    # the token refreshes (the files held expired tokens): one per account
    refreshes = sum(emulator_counters(emulator_url, m)["refreshes"] for m in members)
    assert delta(before, after, "ki2api_token_refreshes_total", result="ok") == refreshes == 3
    # histograms: one duration per chat request, one time to first token for the stream
    assert delta(before, after, "ki2api_request_duration_seconds_count") == 25
    assert delta(before, after, "ki2api_time_to_first_token_seconds_count") == 1
    assert total(after, "ki2api_streams_open") == 0
    # account gauges, read from the pool at scrape time
    states = {dict(k[1])["account"]: v for k, v in after.items() if k[0] == "ki2api_account_state"}
    assert set(states) == {m.pool_id for m in members}
    assert total(after, "ki2api_accounts") == 3


def test_token_counts_equal_the_usage_the_clients_got(gateway_factory: Any) -> None:
    gw = gateway_factory(metrics_token=TOKEN)
    before = scrape(gw)
    seen: dict[str, Any] = defaultdict(int, statuses=[])
    for n in range(4):
        one_request(gw, n, seen)
    for guess in ("wrong-1", "wrong-2"):  # wrong keys: one series for all of them
        with pytest.raises(openai.AuthenticationError):
            gw.openai(api_key=guess).chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}]
            )
    after = scrape(gw)
    assert seen["ok"] == 4
    refused = delta(before, after, "ki2api_requests_total", outcome="authentication")
    assert refused == delta(before, after, "ki2api_requests_total", key="invalid") == 2
    assert delta(before, after, "ki2api_tokens_total", direction="in") == seen["in"]
    assert delta(before, after, "ki2api_tokens_total", direction="out") == seen["out"]
    assert delta(before, after, "ki2api_requests_total", route="/v1/messages", model=MODEL) == 2


@pytest.mark.parametrize("which", ["admin_key", "metrics_token"])
def test_metrics_needs_the_admin_key_or_the_metrics_token(gateway_factory: Any, which: str) -> None:
    gw = gateway_factory(**{which: "the-right-one"})
    url = f"{gw.url}/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"authorization": "Bearer wrong"}).status_code == 401
    refused = httpx.get(url, headers={"authorization": f"Bearer {API_KEY}"})  # a client key
    assert refused.status_code == 401
    assert refused.json()["error"]["type"]  # the OpenAI error shape
    assert scrape(gw, "the-right-one")


def test_metrics_is_off_without_a_token(gateway_factory: Any) -> None:
    gw = gateway_factory()
    r = httpx.get(f"{gw.url}/metrics", headers={"authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 404
    assert "x-request-id" in r.headers
