"""Shared fixtures: the Kiro emulator and the gateway, each under real uvicorn on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from ki2api.server.app import create_app
from ki2api.server.http1 import protocol_for
from ki2api.settings import Settings
from kiro_emulator import EmulatorConfig
from kiro_emulator import create_app as create_emulator_app
from tests.support.servers import serve_in_thread

API_KEY = "test-key-123"


@pytest.fixture(scope="session")
def emulator_url() -> Iterator[str]:
    with serve_in_thread(create_emulator_app(EmulatorConfig(accounts=0))) as url:
        yield url


@dataclass
class Account:
    id: str
    token_file: Path
    data: dict[str, Any]


def make_account(
    emulator_url: str, where: Path, *, auth_method: str = "social", **behaviour: Any
) -> Account:
    r = httpx.post(
        f"{emulator_url}/_emulator/accounts",
        json={"count": 1, "auth_method": auth_method, "behaviour": behaviour},
    )
    r.raise_for_status()
    acct = r.json()["accounts"][0]
    cache = where / ".aws" / "sso" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / "kiro-auth-token.json"
    path.write_text(json.dumps(acct["token_file"]))
    os.chmod(path, 0o600)
    reg = acct.get("client_registration")
    if reg:
        (cache / f"{acct['token_file']['clientIdHash']}.json").write_text(json.dumps(reg))
    return Account(acct["id"], path, acct)


def set_behaviour(emulator_url: str, account_id: str, **behaviour: Any) -> None:
    r = httpx.patch(
        f"{emulator_url}/_emulator/accounts/{account_id}", json={"behaviour": behaviour}
    )
    r.raise_for_status()


def expire_now(emulator_url: str, account_id: str, token_file: Path) -> dict[str, Any]:
    """Expire the account's access tokens at the emulator now (`POST .../expire`) and write the
    token file it then describes (its `expiresAt` in the past): no waiting for a short TTL."""
    r = httpx.post(f"{emulator_url}/_emulator/accounts/{account_id}/expire")
    r.raise_for_status()
    described: dict[str, Any] = r.json()
    token_file.write_text(json.dumps(described["token_file"]))
    return described


def make_expired_account(emulator_url: str, where: Path, **kwargs: Any) -> Account:
    """An account whose current access token has already expired; refreshed ones last an hour."""
    acct = make_account(emulator_url, where, **kwargs)
    return Account(acct.id, acct.token_file, expire_now(emulator_url, acct.id, acct.token_file))


@pytest.fixture
def account(emulator_url: str, tmp_path: Path) -> Account:
    return make_account(emulator_url, tmp_path)


def gateway_settings(
    emulator_url: str, account: Account, tmp_path: Path, **overrides: Any
) -> Settings:
    base = Settings(
        api_keys=(API_KEY,),
        kiro_creds_file=account.token_file,
        kiro_api_base=emulator_url,
        kiro_auth_base=emulator_url,
        kiro_oidc_base=emulator_url,
        home_dir=tmp_path / "home",
        work_dir=tmp_path / "work",
        data_dir=tmp_path / "data",
        image_fetch=False,  # tests that fetch images turn it on with a local image server
        quota_poll_s=0,  # no background getUsageLimits calls among the requests tests count
    )
    return dataclasses.replace(base, **overrides)


@dataclass
class Gateway:
    url: str
    settings: Settings
    account: Account
    emulator_url: str
    clients: list[openai.OpenAI | anthropic.Anthropic] = field(default_factory=list)

    def openai(self, **kwargs: Any) -> openai.OpenAI:
        client = openai.OpenAI(
            base_url=f"{self.url}/v1",
            api_key=kwargs.pop("api_key", API_KEY),
            max_retries=kwargs.pop("max_retries", 0),
            _strict_response_validation=True,
            **kwargs,
        )
        self.clients.append(client)  # closed with the gateway: no socket left to the GC
        return client

    def anthropic(self, **kwargs: Any) -> anthropic.Anthropic:
        """The official anthropic SDK in strict mode (`auth_token=` for Bearer instead)."""
        if "auth_token" not in kwargs:
            kwargs.setdefault("api_key", API_KEY)
        client = anthropic.Anthropic(
            base_url=self.url,
            max_retries=kwargs.pop("max_retries", 0),
            _strict_response_validation=True,
            **kwargs,
        )
        self.clients.append(client)
        return client

    def close_clients(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()

    def emulator_requests(
        self, limit: int = 50, *, catalogue: bool = False
    ) -> list[dict[str, Any]]:
        """This account's logged upstream calls, oldest first; the gateway's ListAvailableModels
        calls (its model catalogue, docs/models.md) only with `catalogue`."""
        r = httpx.get(
            f"{self.emulator_url}/_emulator/requests",
            params={"limit": limit, "account": self.account.id},  # others' traffic cannot crowd
        )
        return [
            q
            for q in r.json()["requests"]
            if q.get("account") == self.account.id
            and (catalogue or not q["path"].endswith("/ListAvailableModels"))
        ]

    def emulator_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(f"{self.emulator_url}/_emulator/stats").json()
        return stats["accounts"].get(self.account.id, {})


@pytest.fixture
def gateway_factory(emulator_url: str, tmp_path: Path) -> Iterator[Any]:
    stack: list[Any] = []
    gateways: list[Gateway] = []

    def start(account: Account | None = None, **overrides: Any) -> Gateway:
        acct = account or make_account(emulator_url, tmp_path)
        settings = gateway_settings(emulator_url, acct, tmp_path, **overrides)
        cm = serve_in_thread(create_app(settings), http=protocol_for(settings))
        url = cm.__enter__()
        stack.append(cm)
        gateways.append(Gateway(url, settings, acct, emulator_url))
        return gateways[-1]

    yield start
    for gw in gateways:
        gw.close_clients()
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


@pytest.fixture
def gateway(gateway_factory: Any, account: Account) -> Gateway:
    gw: Gateway = gateway_factory(account)
    return gw


def _expected_seconds(item: pytest.Item) -> float:
    mark = item.get_closest_marker("long")
    return float(mark.args[0]) if mark and mark.args else 0.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `long(seconds)` start first, longest first, so the run lasts about as long
    as its longest test, not their sum. Under `pytest -n N --dist loadgroup` (`make test`) a
    worker holds up to three tests at once and runs them in order: the N longest go first (one
    each), every further one after 2N others, so no worker queues two long tests in a row."""
    longs = sorted((i for i in items if _expected_seconds(i)), key=lambda i: -_expected_seconds(i))
    others = iter([i for i in items if not _expected_seconds(i)])
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    ordered = longs[:workers]
    for item in longs[workers:]:
        ordered += itertools.islice(others, 2 * workers)
        ordered.append(item)
    items[:] = [*ordered, *others]
