"""Token refresh through the whole stack: ahead of expiry, single-flight, on bearer-invalid 403."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import Gateway, make_expired_account

MODEL = "claude-sonnet-4-20250514"


def ask(gw: Gateway, text: str = "hi") -> str | None:
    resp = gw.openai(timeout=30).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}]
    )
    return resp.choices[0].message.content


def test_expired_token_is_refreshed_once_for_many_waiting_requests(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    account = make_expired_account(emulator_url, tmp_path)
    gw: Gateway = gateway_factory(account)
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda i: ask(gw, f"q{i}"), range(12)))
    assert answers == [f"Echo: q{i}" for i in range(12)]
    assert gw.emulator_stats()["refreshes"] == 1
    saved = json.loads(account.token_file.read_text())
    assert saved["accessToken"] != account.data["token_file"]["accessToken"]
    assert saved["expiresAt"].endswith("Z") and len(saved["expiresAt"]) == 24
    assert account.token_file.stat().st_mode & 0o777 == 0o600


def test_bearer_invalid_403_triggers_one_refresh_and_retry(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    # The file claims an hour of validity but the upstream already refuses the token.
    account = make_expired_account(emulator_url, tmp_path)
    data = json.loads(account.token_file.read_text())
    later = datetime.now(UTC) + timedelta(hours=1)
    data["expiresAt"] = later.strftime("%Y-%m-%dT%H:%M:%S.") + f"{later.microsecond // 1000:03d}Z"
    account.token_file.write_text(json.dumps(data))
    gw: Gateway = gateway_factory(account)
    assert ask(gw) == "Echo: hi"
    assert gw.emulator_stats()["refreshes"] == 1


def test_idc_login_refreshes_against_oidc(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    account = make_expired_account(emulator_url, tmp_path, auth_method="idc")
    gw: Gateway = gateway_factory(account)
    assert ask(gw) == "Echo: hi"
    assert gw.emulator_stats()["refreshes"] == 1
    assert json.loads(account.token_file.read_text())["authMethod"] == "IdC"


def test_failed_refresh_gives_401_and_leaves_the_file_intact(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    account = make_expired_account(emulator_url, tmp_path, refresh_fails=True)
    before = account.token_file.read_bytes()
    gw: Gateway = gateway_factory(account)
    with pytest.raises(openai.AuthenticationError) as info:
        ask(gw)
    assert "kiro" in str(info.value).lower()
    assert account.token_file.read_bytes() == before
