"""Kiro API keys (`ksk_…`, docs/kiro-protocol.md §1.4) through the gateway, against the emulator.

The key is the bearer with `tokentype: API_KEY` on every call of the account (chat,
ListAvailableModels, getUsageLimits), never refreshed; a revoked key disables its account with
a reason saying so.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from ki2api.state.sqlite import SQLiteStore
from tests.conftest import Account


def make_key_account(emulator_url: str, tmp_path: Path) -> tuple[Account, str]:
    r = httpx.post(
        f"{emulator_url}/_emulator/accounts",
        json={"count": 1, "auth_method": "social", "api_key": True},
    )
    r.raise_for_status()
    acct = r.json()["accounts"][0]
    key = acct["api_key"]
    assert key.startswith("ksk_")
    return Account(acct["id"], tmp_path / "no-token-file.json", acct), key


def calls(emulator_url: str, account_id: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{emulator_url}/_emulator/requests", params={"limit": 256})
    return [q for q in r.json()["requests"] if q.get("account") == account_id]


def stored_record(data_dir: Path, account_id: str) -> Any:
    async def read() -> Any:
        store = SQLiteStore.open(data_dir / "ki2api.sqlite3")
        try:
            return await store.get_account(account_id)
        finally:
            await store.aclose()

    return asyncio.run(read())


def test_api_key_account_streams_a_chat_with_the_api_key_header(
    gateway_factory: Any, emulator_url: str, tmp_path: Path
) -> None:
    acct, key = make_key_account(emulator_url, tmp_path)
    gw = gateway_factory(acct, kiro_creds_file=None, kiro_api_key=key)
    client = gw.openai()
    stream = client.chat.completions.create(
        model="claude-sonnet-4.5",
        messages=[{"role": "user", "content": "say hello"}],
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text
    models = client.models.list()
    assert models.data
    seen = calls(emulator_url, acct.id)
    chats = [q for q in seen if q["path"].endswith("/generateAssistantResponse")]
    assert chats and all(q["status"] == 200 for q in chats)
    for q in seen:  # every call of the account: the key's header, the key never logged
        assert q["headers"].get("tokentype") == "API_KEY", q["path"]
        assert key not in str(q)
    assert not [q for q in seen if q["path"] in ("/refreshToken", "/token")]
    stats = httpx.get(f"{emulator_url}/_emulator/stats").json()["accounts"][acct.id]
    assert stats["refreshes"] == 0 and stats["served"] >= 1
    health = httpx.get(f"{gw.url}/health", headers={"x-api-key": "test-key-123"}).json()
    assert key not in str(health)


def test_a_revoked_key_disables_its_account_with_the_reason(
    gateway_factory: Any, emulator_url: str, tmp_path: Path
) -> None:
    acct, key = make_key_account(emulator_url, tmp_path)
    gw = gateway_factory(acct, kiro_creds_file=None, kiro_api_key=key)
    client = gw.openai()
    messages: Any = [{"role": "user", "content": "hi"}]
    client.chat.completions.create(model="claude-sonnet-4.5", messages=messages)
    httpx.post(f"{emulator_url}/_emulator/accounts/{acct.id}/revoke_key").raise_for_status()
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="claude-sonnet-4.5", messages=messages)
    assert caught.value.status_code == 401  # as every refused login (a clear reason below)
    assert caught.value.code == "api_key_revoked"
    assert "revoked or has expired" in str(caught.value.body)
    assert key not in str(caught.value.body)
    record = stored_record(gw.settings.data_dir, "api-key")
    assert record is not None and not record.enabled
    assert record.disabled_reason == "api_key_revoked"
    stats = httpx.get(f"{emulator_url}/_emulator/stats").json()["accounts"][acct.id]
    assert stats["refreshes"] == 0 and stats["refresh_failures"] == 0
    # a new key in KIRO_API_KEY: the same account, enabled again at the next start
    fresh, key2 = make_key_account(emulator_url, tmp_path)
    gw2 = gateway_factory(fresh, kiro_creds_file=None, kiro_api_key=key2)
    gw2.openai().chat.completions.create(model="claude-sonnet-4.5", messages=messages)
    record = stored_record(gw2.settings.data_dir, "api-key")
    assert record.enabled and record.disabled_reason is None
    assert calls(emulator_url, fresh.id)


def test_a_kiro_api_key_that_is_not_one_is_refused_clearly(
    gateway_factory: Any, emulator_url: str, tmp_path: Path
) -> None:
    acct = Account("none", tmp_path / "none", {})
    gw = gateway_factory(acct, kiro_creds_file=None, kiro_api_key="sk-not-a-kiro-key-123")
    with pytest.raises(openai.APIStatusError) as caught:
        gw.openai().chat.completions.create(
            model="claude-sonnet-4.5", messages=[{"role": "user", "content": "hi"}]
        )
    assert "KIRO_API_KEY: a Kiro API key starts with 'ksk_'" in str(caught.value.body)
    assert "sk-not-a-kiro-key-123" not in str(caught.value.body)


def test_api_key_web_search_goes_to_mcp_with_the_header(
    gateway_factory: Any, emulator_url: str, tmp_path: Path
) -> None:
    acct, key = make_key_account(emulator_url, tmp_path)
    gw = gateway_factory(acct, kiro_creds_file=None, kiro_api_key=key)
    message = gw.anthropic().messages.create(
        model="claude-sonnet-4-6",
        max_tokens=256,
        tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
        messages=[{"role": "user", "content": "Perform a web search for the query: ksk keys"}],
    )
    assert [b.type for b in message.content][:2] == ["server_tool_use", "web_search_tool_result"]
    sent = [q for q in calls(emulator_url, acct.id) if q["path"] == "/mcp"]
    assert sent and all(q["headers"].get("tokentype") == "API_KEY" for q in sent)
