"""KiroCredentials against the Kiro emulator under real uvicorn: social and IdC refresh,
rotation persisted, a failing refresh leaves the file intact, single-flight counted upstream."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.kiro.login.credentials import KiroCredentials, discover
from ki2api.kiro.login.token_file import parse_expires_at
from ki2api.settings import Settings
from kiro_emulator import EmulatorConfig, create_app
from tests.support.servers import serve_in_thread


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    with serve_in_thread(create_app(EmulatorConfig(accounts=0))) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def _later() -> datetime:
    """A clock one hour ahead: the emulator's tokens look about to expire."""
    return datetime.now(UTC) + timedelta(seconds=3590)


@dataclasses.dataclass
class Login:
    id: str
    path: Path
    settings: Settings


def login(emulator: str, home: Path, auth_method: str = "social", **behaviour: Any) -> Login:
    """A Kiro login as the IDE leaves it: ~/.aws/sso/cache/kiro-auth-token.json (+ companion)."""
    answer = httpx.post(
        f"{emulator}/_emulator/accounts",
        json={"count": 1, "auth_method": auth_method, "behaviour": behaviour},
    )
    answer.raise_for_status()
    account = answer.json()["accounts"][0]
    cache = home / ".aws" / "sso" / "cache"
    cache.mkdir(parents=True)
    path = cache / "kiro-auth-token.json"
    path.write_text(json.dumps(account["token_file"]))
    registration = account["client_registration"]
    if registration:
        (cache / f"{account['token_file']['clientIdHash']}.json").write_text(
            json.dumps(registration)
        )
    settings = dataclasses.replace(
        Settings(),
        home_dir=home,
        work_dir=home / "work",
        kiro_auth_base=emulator,
        kiro_oidc_base=emulator,
        kiro_api_base=emulator,
    )
    return Login(account["id"], path, settings)


def refreshes(emulator: str, account_id: str) -> int:
    stats = httpx.get(f"{emulator}/_emulator/stats").json()
    return int(stats["accounts"][account_id]["refreshes"])


async def chat_status(http: httpx.AsyncClient, emulator: str, token: str) -> int:
    """Whether the emulator accepts `token` as a bearer (ListAvailableModels)."""
    answer = await http.get(
        f"{emulator}/ListAvailableModels",
        params={"origin": "AI_EDITOR"},
        headers={"Authorization": f"Bearer {token}"},
    )
    return answer.status_code


@pytest.mark.parametrize("auth_method", ["social", "idc"])
async def test_refresh_against_the_emulator_writes_back(
    emulator: str, http: httpx.AsyncClient, tmp_path: Path, auth_method: str
) -> None:
    acct = login(emulator, tmp_path, auth_method, rotate_refresh_token=True)
    original = json.loads(acct.path.read_text())
    creds = KiroCredentials.from_settings(acct.settings, http, clock=_later)
    assert discover(acct.settings).source is not None
    auth = await creds.current()
    assert auth.auth_method == auth_method
    assert auth.access_token != original["accessToken"]
    assert await chat_status(http, emulator, auth.access_token) == 200
    saved = json.loads(acct.path.read_text())
    assert saved["accessToken"] == auth.access_token
    assert saved["refreshToken"] != original["refreshToken"]  # rotation persisted
    found = {"profileArn"} if auth_method == "idc" else set()  # ListAvailableProfiles
    assert set(saved) == set(original) | found
    parsed = parse_expires_at(saved["expiresAt"])
    assert parsed is not None and parsed[1].frac_digits == 3 and parsed[1].suffix == "Z"
    assert refreshes(emulator, acct.id) == 1
    # a second, independent reader of the file can keep refreshing with the rotated token
    again = KiroCredentials.from_settings(acct.settings, http, clock=_later)
    assert (await again.refresh()).access_token != auth.access_token
    assert refreshes(emulator, acct.id) == 2


async def test_refresh_fails_leaves_the_file_intact(
    emulator: str, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    acct = login(emulator, tmp_path, "social", refresh_fails=True)
    before = acct.path.read_bytes()
    creds = KiroCredentials.from_settings(acct.settings, http, clock=_later)
    with pytest.raises(GatewayError) as caught:
        await creds.refresh()
    assert caught.value.kind is ErrorKind.UPSTREAM_AUTH
    assert "Sign in to Kiro again" in caught.value.message
    assert acct.path.read_bytes() == before
    assert sorted(p.name for p in acct.path.parent.iterdir()) == ["kiro-auth-token.json"]
    # the still-valid token keeps being served while refresh-ahead fails
    auth = await creds.current()
    assert auth.access_token == json.loads(before)["accessToken"]


async def test_single_flight_counted_by_the_emulator(
    emulator: str, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    acct = login(emulator, tmp_path, "idc", rotate_refresh_token=True)
    first = json.loads(acct.path.read_text())["accessToken"]
    creds = KiroCredentials.from_settings(acct.settings, http, clock=_later)
    calls = [creds.current() for _ in range(25)] + [creds.refresh(stale=first) for _ in range(25)]
    results = await asyncio.gather(*calls)
    assert len({r.access_token for r in results}) == 1
    assert refreshes(emulator, acct.id) == 1
    assert creds.refresh_count == 1


async def test_refused_bearer_then_forced_refresh(
    emulator: str, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    acct = login(emulator, tmp_path, "social")
    creds = KiroCredentials.from_settings(acct.settings, http)  # real clock: token is fresh
    auth = await creds.current()
    httpx.post(f"{emulator}/_emulator/accounts/{acct.id}/expire").raise_for_status()
    assert await chat_status(http, emulator, auth.access_token) == 403
    renewed = await creds.refresh(stale=auth.access_token)
    assert await chat_status(http, emulator, renewed.access_token) == 200
    assert refreshes(emulator, acct.id) == 1
