"""The emulator's API keys, device-code flow and social PKCE login, over HTTP
(src/kiro_emulator/signin.py, state.py; docs/emulator.md "Logins")."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest

from ki2api.kiro.login.social_flow import challenge_of
from kiro_emulator import EmulatorConfig
from tests.component.test_emulator_kit import BEARER_BODY, Emu, chat_body, running

DEVICE = "urn:ietf:params:oauth:grant-type:device_code"


def key_account(e: Emu) -> dict[str, Any]:
    r = e.client.post(e.base + "/_emulator/accounts", json={"count": 1, "api_key": True})
    assert r.status_code == 200, r.text
    account: dict[str, Any] = r.json()["accounts"][0]
    return account


def models(e: Emu, headers: dict[str, str]) -> httpx.Response:
    return e.client.get(e.base + "/ListAvailableModels", headers=headers)


@pytest.mark.parametrize(
    ("with_key", "tokentype", "status"),
    [
        (True, "API_KEY", 200),
        (True, "api_key", 200),  # the header's value in any case
        (True, None, 403),  # a key without the header
        (True, "EXTERNAL_IDP", 403),
        (False, "API_KEY", 403),  # the header with a login's access token
        (False, None, 200),
    ],
)
def test_api_key_needs_its_header(with_key: bool, tokentype: str | None, status: int) -> None:
    with running(EmulatorConfig(accounts=0)) as e:
        acct = key_account(e)
        bearer = acct["api_key"] if with_key else e.token(acct["id"])
        headers = {"Authorization": f"Bearer {bearer}"}
        if tokentype is not None:
            headers["tokentype"] = tokentype
        r = models(e, headers)
        assert r.status_code == status
        if status == 403:
            assert r.json() == BEARER_BODY


def test_api_key_chat_needs_no_profile_arn_and_usage_answers() -> None:
    with running(EmulatorConfig(accounts=0)) as e:
        acct = key_account(e)
        headers = {"Authorization": f"Bearer {acct['api_key']}", "tokentype": "API_KEY"}
        body = orjson.dumps(chat_body(profile_arn=None))
        chat = e.client.post(e.base + "/generateAssistantResponse", content=body, headers=headers)
        assert chat.status_code == 200
        usage = e.client.get(e.base + "/getUsageLimits", headers=headers)
        assert usage.status_code == 200
        # the same account's OAuth token, social, still must send its profile ARN
        plain = e.client.post(
            e.base + "/generateAssistantResponse", content=body, headers=e.auth(acct["id"])
        )
        assert plain.status_code == 400


def test_revoked_key_is_refused_and_described() -> None:
    with running(EmulatorConfig(accounts=0)) as e:
        acct = key_account(e)
        headers = {"Authorization": f"Bearer {acct['api_key']}", "tokentype": "API_KEY"}
        r = e.client.post(f"{e.base}/_emulator/accounts/{acct['id']}/revoke_key")
        assert r.status_code == 200 and r.json()["api_key_live"] is False
        assert models(e, headers).status_code == 403
        again = e.client.post(f"{e.base}/_emulator/accounts/{acct['id']}/revoke_key")
        assert again.status_code == 200
        plain = e.client.post(e.base + "/_emulator/accounts", json={"count": 1}).json()
        no_key = e.client.post(
            f"{e.base}/_emulator/accounts/{plain['accounts'][0]['id']}/revoke_key"
        )
        assert no_key.status_code == 400


def _register(e: Emu) -> dict[str, Any]:
    body = {"clientName": "Kiro IDE", "clientType": "public", "scopes": ["codewhisperer:x"]}
    r = e.client.post(e.base + "/client/register", json=body)
    assert r.status_code == 200, r.text
    client: dict[str, Any] = r.json()
    return client


def _start(e: Emu, client: dict[str, Any]) -> dict[str, Any]:
    body = {**_creds(client), "startUrl": "https://view.awsapps.com/start"}
    r = e.client.post(e.base + "/device_authorization", json=body)
    assert r.status_code == 200, r.text
    auth: dict[str, Any] = r.json()
    return auth


def _creds(client: dict[str, Any]) -> dict[str, str]:
    return {"clientId": client["clientId"], "clientSecret": client["clientSecret"]}


def _poll(e: Emu, client: dict[str, Any], auth: dict[str, Any]) -> httpx.Response:
    body = {**_creds(client), "grantType": DEVICE, "deviceCode": auth["deviceCode"]}
    return e.client.post(e.base + "/token", json=body)


def test_device_flow_pending_slow_down_approve_then_refresh() -> None:
    with running(EmulatorConfig(accounts=0)) as e:
        e.client.post(e.base + "/_emulator/device", json={"slow_down_polls": 1, "interval": 2})
        client = _register(e)
        auth = _start(e, client)
        assert auth["interval"] == 2 and auth["verificationUriComplete"].endswith(auth["userCode"])
        answers = [_poll(e, client, auth).json()["error"] for _ in range(3)]
        assert answers == ["slow_down", "authorization_pending", "authorization_pending"]
        approve = {"user_code": auth["userCode"].lower()}
        assert e.client.post(e.base + "/_emulator/device/approve", json=approve).status_code == 200
        tokens = _poll(e, client, auth)
        assert tokens.status_code == 200 and tokens.json()["tokenType"] == "Bearer"
        assert _poll(e, client, auth).json()["error"] == "invalid_grant"  # used once
        refresh = {**_creds(client), "grantType": "refresh_token"}
        refresh["refreshToken"] = tokens.json()["refreshToken"]
        assert e.client.post(e.base + "/token", json=refresh).status_code == 200  # an IdC login
        view = e.client.get(e.base + "/_emulator/device").json()["authorizations"]
        assert [a["polls"] for a in view] == [5] and "deviceCode" not in str(view)


@pytest.mark.parametrize(
    ("setup", "error"),
    [
        ({"expires_in": 0}, "expired_token"),
        ({"deny": True}, "access_denied"),
        ({"auto_approve_after": 0}, None),
    ],
)
def test_device_flow_endings(setup: dict[str, Any], error: str | None) -> None:
    with running(EmulatorConfig(accounts=0)) as e:
        deny = setup.pop("deny", False)
        e.client.post(e.base + "/_emulator/device", json=setup)
        client = _register(e)
        auth = _start(e, client)
        if deny:
            e.client.post(
                e.base + "/_emulator/device/approve",
                json={"user_code": auth["userCode"], "deny": True},
            )
        r = _poll(e, client, auth)
        assert (r.json().get("error") if r.status_code != 200 else None) == error


def test_device_flow_refuses_a_wrong_client() -> None:
    with running(EmulatorConfig(accounts=0)) as e:
        client = _register(e)
        auth = _start(e, client)
        wrong = {**client, "clientSecret": "nope"}
        assert _poll(e, wrong, auth).status_code == 401
        assert (
            e.client.post(e.base + "/_emulator/device", json={"interval": "x"}).status_code == 400
        )
        assert (
            e.client.post(
                e.base + "/_emulator/device/approve", json={"user_code": "NONE"}
            ).status_code
            == 404
        )


def _login(e: Emu, challenge: str, redirect: str = "http://127.0.0.1:9/cb") -> httpx.Response:
    params = {
        "idp": "Google",
        "redirect_uri": redirect,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "st",
    }
    return e.client.get(e.base + "/login", params=params, follow_redirects=False)


def test_social_login_redirects_with_a_code_checked_by_pkce() -> None:
    verifier = "v" * 50
    with running(EmulatorConfig(accounts=0)) as e:
        r = _login(e, challenge_of(verifier))
        assert r.status_code == 302
        where = urlsplit(r.headers["location"])
        query = {k: v[0] for k, v in parse_qs(where.query).items()}
        assert (where.netloc, where.path, query["state"]) == ("127.0.0.1:9", "/cb", "st")
        exchange = {"code": query["code"], "redirect_uri": "http://127.0.0.1:9/cb"}
        bad = e.client.post(e.base + "/oauth/token", json={**exchange, "code_verifier": "w" * 50})
        assert bad.status_code == 400  # and the code is spent
        r = _login(e, challenge_of(verifier))
        query = {k: v[0] for k, v in parse_qs(urlsplit(r.headers["location"]).query).items()}
        exchange["code"] = query["code"]
        ok = e.client.post(e.base + "/oauth/token", json={**exchange, "code_verifier": verifier})
        assert ok.status_code == 200 and set(ok.json()) == {
            "accessToken",
            "refreshToken",
            "expiresIn",
            "profileArn",
        }
        again = e.client.post(e.base + "/oauth/token", json={**exchange, "code_verifier": verifier})
        assert again.status_code == 400


@pytest.mark.parametrize(
    "redirect", ["https://evil.example/cb", "http://10.0.0.1/cb", "javascript:alert(1)"]
)
def test_social_login_sends_codes_only_to_this_machine(redirect: str) -> None:
    with running(EmulatorConfig(accounts=0)) as e:
        assert _login(e, challenge_of("v" * 50), redirect).status_code == 400
