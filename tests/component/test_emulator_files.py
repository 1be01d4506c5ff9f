"""Token files written for the gateway, and `ki2api emulator` argument parsing."""

from __future__ import annotations

import hashlib
import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from kiro_emulator import EmulatorConfig, create_app, parse_args, write_credentials
from tests.component.test_emulator_kit import chat_body, running

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SOCIAL_KEYS = {"accessToken", "refreshToken", "profileArn", "expiresAt", "authMethod", "provider"}
IDC_KEYS = {
    "accessToken",
    "refreshToken",
    "expiresAt",
    "clientIdHash",
    "authMethod",
    "provider",
    "region",
}
# kiro-ext: sha1 of the JSON string {"startUrl":"<Builder ID start URL>"}
BUILDER_ID_HASH = hashlib.sha1(b'{"startUrl":"https://view.awsapps.com/start"}').hexdigest()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def read(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def test_create_app_writes_social_token_files(tmp_path: Path) -> None:
    app = create_app(EmulatorConfig(accounts=2, credentials_dir=tmp_path))
    state = app.state.emulator
    for k in (1, 2):
        path = tmp_path / f"acct-{k}" / "kiro-auth-token.json"
        assert mode(path) == 0o600
        data = read(path)
        assert set(data) == SOCIAL_KEYS
        assert data["authMethod"] == "social" and data["provider"] == "Google"
        assert data["accessToken"].startswith("aoa") and data["refreshToken"].startswith("aor")
        assert ISO_MS.match(data["expiresAt"])
        assert re.fullmatch(
            r"arn:aws:codewhisperer:us-east-1:\d{12}:profile/\w+", data["profileArn"]
        )
        assert data["accessToken"] == state.accounts[f"acct-{k}"].access_token
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acct-1", "acct-2"]


def test_idc_files_have_the_companion_registration(tmp_path: Path) -> None:
    create_app(EmulatorConfig(accounts=1, auth_method="idc", credentials_dir=tmp_path))
    folder = tmp_path / "acct-1"
    token = read(folder / "kiro-auth-token.json")
    assert set(token) == IDC_KEYS
    assert (token["authMethod"], token["provider"], token["region"]) == (
        "IdC",
        "BuilderId",
        "us-east-1",
    )
    assert token["clientIdHash"] == BUILDER_ID_HASH
    companion = folder / f"{BUILDER_ID_HASH}.json"
    assert mode(companion) == 0o600
    reg = read(companion)
    assert set(reg) == {"clientId", "clientSecret", "expiresAt"} and ISO_MS.match(reg["expiresAt"])


def test_write_credentials_from_the_accounts_endpoint(tmp_path: Path) -> None:
    with running() as e:
        r = e.client.post(e.base + "/_emulator/accounts", json={"count": 2, "auth_method": "idc"})
        accounts = r.json()["accounts"]
        paths = write_credentials(tmp_path, accounts)
        assert paths == [tmp_path / a["id"] / "kiro-auth-token.json" for a in accounts]
        for path, acct in zip(paths, accounts, strict=True):
            assert read(path) == acct["token_file"]
            assert read(path.parent / f"{BUILDER_ID_HASH}.json") == acct["client_registration"]
            token = read(path)
            reg = read(path.parent / f"{token['clientIdHash']}.json")
            refreshed = e.client.post(
                e.base + "/token",
                json={
                    "clientId": reg["clientId"],
                    "clientSecret": reg["clientSecret"],
                    "grantType": "refresh_token",
                    "refreshToken": token["refreshToken"],
                },
            )
            assert refreshed.status_code == 200
        # rewriting keeps 0600 and replaces the content
        write_credentials(tmp_path, accounts[:1])
        assert mode(paths[0]) == 0o600


def test_written_social_tokens_work_against_the_emulator(tmp_path: Path) -> None:
    with running(EmulatorConfig(accounts=1, credentials_dir=tmp_path)) as e:
        data = read(tmp_path / "acct-1" / "kiro-auth-token.json")
        r = e.client.post(
            e.base + "/generateAssistantResponse",
            json=chat_body("hi", profile_arn=data["profileArn"]),
            headers={"Authorization": f"Bearer {data['accessToken']}"},
        )
        assert r.status_code == 200
        refreshed = e.client.post(
            e.base + "/refreshToken", json={"refreshToken": data["refreshToken"]}
        )
        assert refreshed.status_code == 200


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--port", "9001"],
            {"host": "127.0.0.1", "port": 9001, "accounts": 1, "auth_method": "social"},
        ),
        (
            ["--host", "0.0.0.0", "--port", "9002", "--accounts", "3", "--auth-method", "idc"],
            {"host": "0.0.0.0", "port": 9002, "accounts": 3, "auth_method": "idc"},
        ),
        (
            ["--port", "9003", "--token-ttl", "5", "--credentials-dir", "/tmp/creds"],
            {"token_ttl_s": 5.0, "credentials_dir": Path("/tmp/creds")},
        ),
        (["--port", "9004", "--seed", "42"], {"seed": 42, "base_url": "http://127.0.0.1:9004"}),
    ],
    ids=["defaults", "accounts-idc", "ttl-and-dir", "seed"],
)
def test_parse_args(argv: list[str], expected: dict[str, Any]) -> None:
    options = parse_args(argv)
    got = {"host": options.host, "port": options.port, **vars(options.config)}
    assert {k: got[k] for k in expected} == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["--auth-method", "oauth"],
        ["--accounts", "-1"],
        ["--port", "70000"],
        ["--token-ttl", "-3"],
        ["--port", "x"],
    ],
    ids=["auth-method", "accounts", "port-range", "ttl", "port-type"],
)
def test_parse_args_rejects_bad_values(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_config_defaults() -> None:
    c = EmulatorConfig()
    assert (c.accounts, c.auth_method, c.token_ttl_s, c.credentials_dir, c.base_url, c.seed) == (
        1,
        "social",
        3600,
        None,
        None,
        0,
    )
