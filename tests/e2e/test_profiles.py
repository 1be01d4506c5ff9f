"""Identity Center logins without a profile ARN find one (ListAvailableProfiles, or the IDE's
profile.json) and chat, through the real HTTP stack against an emulator account that refuses
calls without its own ARN (kiro/login/profiles.py; docs/kiro-protocol.md §1.3)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from ki2api.kiro.login.profiles import LIST_PROFILES_TARGET, ide_profile_paths
from tests.conftest import Account, Gateway

MODEL = "claude-sonnet-4-20250514"


def strict_idc_account(emulator_url: str, where: Path) -> Account:
    r = httpx.post(
        f"{emulator_url}/_emulator/accounts",
        json={"count": 1, "auth_method": "idc", "strict_profile_arn": True},
    )
    r.raise_for_status()
    acct = r.json()["accounts"][0]
    assert "profileArn" not in acct["token_file"]
    cache = where / ".aws" / "sso" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / "kiro-auth-token.json"
    path.write_text(json.dumps(acct["token_file"]))
    os.chmod(path, 0o600)
    reg = acct["client_registration"]
    (cache / f"{acct['token_file']['clientIdHash']}.json").write_text(json.dumps(reg))
    return Account(acct["id"], path, acct)


def profile_lookups(gw: Gateway) -> list[dict[str, Any]]:
    return [
        q
        for q in gw.emulator_requests()
        if q.get("headers", {}).get("x-amz-target") == LIST_PROFILES_TARGET
    ]


def test_idc_account_without_a_profile_finds_one_and_chats(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    account = strict_idc_account(emulator_url, tmp_path)
    own = account.data["profile_arn"]
    gw: Gateway = gateway_factory(account)
    answer = gw.openai(timeout=30).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content == "Echo: hi"
    message = gw.anthropic(timeout=30).messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "again"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "Echo: again"
    assert len(profile_lookups(gw)) == 1  # found once, then kept
    assert json.loads(account.token_file.read_text())["profileArn"] == own  # kept with it


@pytest.mark.skipif(sys.platform != "linux", reason="profile.json path per platform")
def test_ide_login_uses_the_ides_profile_json(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    account = strict_idc_account(emulator_url, tmp_path)
    profile = ide_profile_paths(tmp_path)[0]
    profile.parent.mkdir(parents=True)
    profile.write_text(json.dumps({"arn": account.data["profile_arn"], "name": "Kiro"}))
    gw: Gateway = gateway_factory(account, home_dir=tmp_path)
    answer = gw.openai(timeout=30).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content == "Echo: hi"
    assert profile_lookups(gw) == []
