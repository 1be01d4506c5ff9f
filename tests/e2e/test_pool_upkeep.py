"""The pool's upkeep through the real stack: quota polling feeds the reset date a quota error
rests the account until, and revoked logins get a second chance after a new sign-in."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import API_KEY, Gateway, make_expired_account, set_behaviour
from tests.support.polling import eventually
from tests.support.pool_accounts import Member, make_pool, requests_of, start_pool_gateway

AUTH = {"Authorization": f"Bearer {API_KEY}"}
MODEL = "claude-sonnet-4-20250514"


def _chat(gw: Gateway, text: str = "hi") -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
    return httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=AUTH, timeout=30)


def _health_account(gw: Gateway) -> dict[str, Any]:
    r = httpx.get(f"{gw.url}/health", headers=AUTH)
    accounts: list[dict[str, Any]] = r.json()["pool"]
    assert len(accounts) == 1
    return accounts[0]


def test_polled_quota_reset_date_is_when_a_dry_account_comes_back(gateway_factory: Any) -> None:
    reset_at = int(time.time()) + 7200
    gw: Gateway = gateway_factory(quota_poll_s=0.3)
    set_behaviour(gw.emulator_url, gw.account.id, quota_reset_at=reset_at)
    polled = eventually(lambda: _health_account(gw)["quota_remaining"] is not None, 15.0)
    assert polled
    paths = [q["path"] for q in gw.emulator_requests()]
    assert "/getUsageLimits" in paths
    set_behaviour(gw.emulator_url, gw.account.id, quota_exhausted=True)
    r = _chat(gw)
    assert r.status_code == 429 and r.headers["x-should-retry"] == "false"
    assert abs(int(r.headers["retry-after"]) - (reset_at - time.time())) < 120
    chats = gw.emulator_stats()["chat_requests"]
    assert _chat(gw).status_code == 429
    assert gw.emulator_stats()["chat_requests"] == chats  # not tried again before its reset


def test_revoked_login_comes_back_after_a_new_sign_in(
    gateway_factory: Any, emulator_url: str, tmp_path: Path
) -> None:
    account = make_expired_account(emulator_url, tmp_path, refresh_fails=True)
    gw: Gateway = gateway_factory(account)
    r = _chat(gw)
    assert r.status_code == 401 and "Sign in to Kiro again" in r.json()["error"]["message"]
    assert _health_account(gw)["disabled_reason"] == "invalid_grant"
    assert _chat(gw).status_code == 503  # disabled: no second refresh attempt
    assert gw.emulator_stats()["refresh_failures"] == 1
    # the user signs in again: the token file changes
    set_behaviour(emulator_url, account.id, refresh_fails=False)
    data = json.loads(account.token_file.read_text())
    data["signedInAgain"] = True
    account.token_file.write_text(json.dumps(data))
    ok = eventually(lambda: _chat(gw).status_code == 200, 15.0)
    assert ok and _health_account(gw)["enabled"] is True


def test_a_restart_gives_a_revoked_login_one_more_try(
    gateway_factory: Any, emulator_url: str, tmp_path: Path
) -> None:
    account = make_expired_account(emulator_url, tmp_path, refresh_fails=True)
    first: Gateway = gateway_factory(account)
    assert _chat(first).status_code == 401
    set_behaviour(emulator_url, account.id, refresh_fails=False)  # fixed while it was down
    second: Gateway = gateway_factory(account)  # same data dir: the store remembers "disabled"
    assert _chat(second).status_code == 200
    assert _health_account(second)["enabled"] is True


def _machine_ids(emulator_url: str, members: list[Member]) -> dict[str, set[str]]:
    """The machine id each account's chat calls carried (the tail of the IDE user agent)."""
    found: dict[str, set[str]] = {m.emu_id: set() for m in members}
    for q in requests_of(emulator_url, members):
        agent = q["headers"]["x-amz-user-agent"]
        found[q["account"]].add(agent.rsplit("-", 1)[-1])
    return found


def test_each_account_keeps_its_own_machine_id_across_restarts(
    gateway_factory: Any, emulator_url: str, tmp_path: Path
) -> None:
    members = make_pool(emulator_url, tmp_path, [{}, {}])
    for round_ in range(2):  # the second gateway reads the same store: the ids must not change
        gw = start_pool_gateway(gateway_factory, members, tmp_path)
        for i in range(8):  # different conversations spread over both accounts
            assert _chat(gw, f"conversation {round_}-{i}").status_code == 200
    ids = _machine_ids(emulator_url, members)
    assert all(len(seen) == 1 for seen in ids.values()), ids  # stable per account
    first, second = (next(iter(seen)) for seen in ids.values())
    assert first != second  # never shared between accounts
    assert all(len(mid) == 64 and int(mid, 16) >= 0 for mid in (first, second))
