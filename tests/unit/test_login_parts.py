"""The pure parts of logging in without the IDE: PKCE, the callback, polling, keys, headers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from ki2api.kiro.endpoint import chat_headers, is_api_key
from ki2api.kiro.login.api_key import check_key, mask_key
from ki2api.kiro.login.device_flow import SLOW_DOWN_STEP_S, PollDecision, poll_decision
from ki2api.kiro.login.login_tokens import client_id_hash, idc_login_json, social_login_json
from ki2api.kiro.login.refresh import RefreshedTokens
from ki2api.kiro.login.social_flow import (
    CALLBACK_PATH,
    callback_result,
    challenge_of,
    login_url,
    pkce_pair,
)
from kiro_emulator.credentials import client_id_hash as emulator_client_id_hash

# --- PKCE -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verifier", "challenge"),
    [
        # the PKCE standard's own worked example (docs/kiro-protocol.md §1.4)
        (
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        ),
    ],
)
def test_challenge_of(verifier: str, challenge: str) -> None:
    assert challenge_of(verifier) == challenge


def test_pkce_pair_is_fresh_and_consistent() -> None:
    pairs = [pkce_pair() for _ in range(20)]
    assert len({v for v, _ in pairs}) == 20
    for verifier, challenge in pairs:
        assert 43 <= len(verifier) <= 128 and challenge == challenge_of(verifier)
        assert "=" not in challenge and "+" not in challenge and "/" not in challenge


def test_login_url_carries_the_pkce_challenge_and_state() -> None:
    url = login_url("https://auth.example/", "Github", "http://127.0.0.1:5/cb", "CH", "ST")
    parts = urlsplit(url)
    assert (parts.netloc, parts.path) == ("auth.example", "/login")
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query == {
        "idp": "Github",
        "redirect_uri": "http://127.0.0.1:5/cb",
        "code_challenge": "CH",
        "code_challenge_method": "S256",
        "state": "ST",
    }


@pytest.mark.parametrize(
    ("target", "code", "why", "ours"),
    [
        (f"{CALLBACK_PATH}?code=C1&state=S", "C1", "", True),
        (f"{CALLBACK_PATH}?state=S&code=C1&extra=1", "C1", "", True),
        (f"{CALLBACK_PATH}?code=C1&state=other", None, "state does not match", False),
        (f"{CALLBACK_PATH}?code=C1", None, "state does not match", False),
        (f"{CALLBACK_PATH}?error=access_denied&state=S", None, "refused (access_denied)", True),
        (f"{CALLBACK_PATH}?state=S", None, "no code", True),
    ],
)
def test_callback_result(target: str, code: str | None, why: str, ours: bool) -> None:
    found = callback_result(target, "S")
    assert found is not None
    assert (found.code, found.ours) == (code, ours) and why in found.why


@pytest.mark.parametrize("target", ["/favicon.ico", "/", "/oauth/callbackx?code=1&state=S"])
def test_not_the_callback(target: str) -> None:
    assert callback_result(target, "S") is None


# --- device code polling --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "interval", "expected"),
    [
        ("authorization_pending", 5.0, PollDecision(False, 5.0, 5.0)),
        ("authorization_pending", 1.0, PollDecision(False, 1.0, 1.0)),
        ("slow_down", 5.0, PollDecision(False, 5.0 + SLOW_DOWN_STEP_S, 5.0 + SLOW_DOWN_STEP_S)),
        ("slow_down", 10.0, PollDecision(False, 15.0, 15.0)),
    ],
)
def test_poll_goes_on(error: str, interval: float, expected: PollDecision) -> None:
    assert poll_decision(error, interval) == expected


@pytest.mark.parametrize(
    ("error", "why"),
    [
        ("expired_token", "expired"),
        ("access_denied", "denied"),
        ("invalid_grant", "refused the login (invalid_grant)"),
        ("HTTP 500", "refused the login (HTTP 500)"),
        (None, "no reason"),
    ],
)
def test_poll_stops(error: str | None, why: str) -> None:
    decision = poll_decision(error, 5.0)
    assert decision.stop and why in decision.why


# --- API keys -------------------------------------------------------------------------------------

KEY = "ksk_" + "A1b2C3d4" * 6


@pytest.mark.parametrize(
    ("key", "masked"),
    [
        (KEY, "ksk_…C3d4"),
        ("ksk_abcdefghijklmnop", "ksk_…mnop"),
        ("ksk_short", "ksk_…"),  # too short to show any of it
    ],
)
def test_mask_key(key: str, masked: str) -> None:
    assert mask_key(key) == masked
    assert key not in mask_key(key) or len(key) <= 5


@pytest.mark.parametrize(
    ("raw", "result"),
    [
        (KEY, KEY),
        (f"  {KEY}\n", KEY),
        ("", "no API key given"),
        ("   \n", "no API key given"),
        ("sk-ant-abcdef", "starts with 'ksk_'"),
        ("KSK_abcdefgh", "starts with 'ksk_'"),
        ("ksk_ab", "too short"),
        ("ksk_abc def ghi", "holds characters"),
        ("ksk_abc\u00e9defgh", "holds characters"),
    ],
)
def test_check_key(raw: str, result: str) -> None:
    if result.startswith("ksk_"):
        assert check_key(raw) == result
        return
    with pytest.raises(ValueError, match=result) as caught:
        check_key(raw)
    assert raw.strip() not in str(caught.value) or not raw.strip()


@pytest.mark.parametrize(
    ("token", "tokentype"),
    [(KEY, "API_KEY"), ("aoaAAAA", None), ("eyJraWQiOi", None), ("xksk_abc", None)],
)
def test_chat_headers_name_an_api_key(token: str, tokentype: str | None) -> None:
    headers = chat_headers(token, machine="m" * 64, invocation_id="i")
    assert headers.get("tokentype") == tokentype
    assert is_api_key(token) == (tokentype is not None)
    assert headers["authorization"] == f"Bearer {token}"


# --- the token files a login writes ---------------------------------------------------------------


def test_client_id_hash_is_the_ides() -> None:
    assert client_id_hash() == emulator_client_id_hash()
    assert client_id_hash("https://x.awsapps.com/start") == emulator_client_id_hash(
        "https://x.awsapps.com/start"
    )


NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TOKENS = RefreshedTokens("aoaA", "aorR", 3600, "arn:aws:codewhisperer:us-east-1:1:profile/P")


def test_idc_login_json_is_the_ides_shape() -> None:
    data = idc_login_json(
        TOKENS, region="eu-west-1", start_url="https://view.awsapps.com/start", now=NOW
    )
    assert data == {
        "accessToken": "aoaA",
        "refreshToken": "aorR",
        "expiresAt": "2026-01-02T04:04:05.000Z",
        "clientIdHash": client_id_hash(),
        "authMethod": "IdC",
        "provider": "BuilderId",
        "region": "eu-west-1",
    }
    enterprise = idc_login_json(TOKENS, region="us-east-1", start_url="https://o.awsapps.com/start")
    assert enterprise["provider"] == "Enterprise"


def test_social_login_json_is_the_ides_shape() -> None:
    data = social_login_json(TOKENS, provider="Github", now=NOW)
    assert json.loads(json.dumps(data)) == {
        "accessToken": "aoaA",
        "refreshToken": "aorR",
        "expiresAt": "2026-01-02T04:04:05.000Z",
        "authMethod": "social",
        "provider": "Github",
        "profileArn": "arn:aws:codewhisperer:us-east-1:1:profile/P",
    }
