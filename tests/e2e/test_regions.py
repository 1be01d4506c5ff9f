"""Each account calls the Q host of its own region (issue 10), through the real stack.

The emulator serves every region under a path prefix (`/{region}/...`, regions.py) and refuses
a login on the wrong one with 403 "bearer token invalid", as real Kiro does; the gateway's
`KIRO_API_BASE` is `http://127.0.0.1:PORT/{region}`, as the default `https://q.{region}.amazonaws.com`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.conftest import API_KEY, Gateway, make_account
from tests.support.pool_accounts import make_pool, requests_of, start_pool_gateway

MODEL = "claude-sonnet-4-20250514"


def _ask(gw: Gateway, text: str) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
    headers = {"authorization": f"Bearer {API_KEY}"}
    return httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def _regions_by_account(emulator_url: str) -> dict[str | None, set[tuple[str | None, Any]]]:
    log = httpx.get(f"{emulator_url}/_emulator/requests", params={"limit": 256}).json()
    out: dict[str | None, set[tuple[str | None, Any]]] = {}
    for q in log["requests"]:
        if q["path"].endswith("generateAssistantResponse"):
            out.setdefault(q["account"], set()).add((q.get("region"), q["status"]))
    return out


def test_two_accounts_of_two_regions_each_reach_their_own_host(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    eu, us = make_pool(emulator_url, tmp_path, [{"region": "eu-central-1"}, {}])
    assert ":eu-central-1:" in eu.account.data["profile_arn"]
    gw = start_pool_gateway(
        gateway_factory, [eu, us], tmp_path, kiro_api_base=f"{emulator_url}/{{region}}"
    )
    for i in range(6):
        r = _ask(gw, f"hello {i}")
        assert r.status_code == 200, r.text
    seen = _regions_by_account(emulator_url)
    assert seen[eu.emu_id] == {("eu-central-1", 200)}, seen
    assert seen[us.emu_id] == {("us-east-1", 200)}, seen
    assert len(requests_of(emulator_url, [eu])) >= 1 and len(requests_of(emulator_url, [us])) >= 1


def test_an_identity_center_login_of_a_european_region_calls_eu_central_1(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    """No profileArn in an IdC token file: the login's own region (eu-west-1) decides."""
    acct = make_account(emulator_url, tmp_path, auth_method="idc", region="eu-west-1")
    assert acct.data["token_file"]["region"] == "eu-west-1"
    assert "profileArn" not in acct.data["token_file"]
    gw: Gateway = gateway_factory(acct, kiro_api_base=f"{emulator_url}/{{region}}")
    r = _ask(gw, "from Europe")
    assert r.status_code == 200, r.text
    assert _regions_by_account(emulator_url)[acct.id] == {("eu-central-1", 200)}


def test_kiro_region_overrides_and_the_wrong_region_is_refused_like_kiro(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    """KIRO_REGION sends every account to one region: the European login is refused there
    (403 bearer invalid, even after a refresh), and the pool serves from the other account."""
    eu, us = make_pool(emulator_url, tmp_path, [{"region": "eu-central-1"}, {}])
    gw = start_pool_gateway(
        gateway_factory,
        [eu, us],
        tmp_path,
        kiro_api_base=f"{emulator_url}/{{region}}",
        kiro_region="us-east-1",
    )
    for i in range(3):
        assert _ask(gw, f"hello {i}").status_code == 200
    seen = _regions_by_account(emulator_url)
    assert ("us-east-1", 403) in seen.get(None, set()), seen  # the EU token, refused
    assert seen[us.emu_id] == {("us-east-1", 200)}, seen
    assert eu.emu_id not in seen, seen  # never served: its token is not valid there
