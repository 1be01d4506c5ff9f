"""The client identity (issue 13, part C): every version the Kiro headers name comes from one
place (kiro/client_identity.py), is stable per account, and can be updated without a release
through `KI2API_CLIENT_IDENTITY` (a JSON file), which is validated at start."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from ki2api.cli.main import main
from ki2api.kiro import endpoint
from ki2api.kiro.client_identity import (
    BUILT_IN,
    ClientIdentity,
    IdentityError,
    identity_from_json,
    load_identity,
)
from ki2api.settings import SettingsError, load_settings

MACHINE = "ab" * 32
OVERRIDE = {
    "_source": "kiro.dev changelog, 2026-12",  # a comment: ignored
    "ide_version": "1.2.7",
    "sdk_version": "1.0.40",
    "node_version": "22.23.1",
    "os_choices": ["win32#10.0.26200"],
    "agent_mode": "spec",
}


def _chat_headers(identity: ClientIdentity, machine: str = MACHINE) -> dict[str, str]:
    before = endpoint.client_identity()
    endpoint.set_identity(identity)
    try:
        return endpoint.chat_headers("tok", machine=machine, invocation_id="inv")
    finally:
        endpoint.set_identity(before)


def test_the_headers_built_from_an_override() -> None:
    identity = identity_from_json(OVERRIDE, source="test")
    h = _chat_headers(identity)
    ide = f"KiroIDE-1.2.7-{MACHINE}"
    assert h["x-amz-user-agent"] == f"aws-sdk-js/1.0.40 {ide}"
    assert h["user-agent"] == (
        "aws-sdk-js/1.0.40 ua/2.1 os/win32#10.0.26200 lang/js md/nodejs#22.23.1 "
        f"api/codewhispererstreaming#1.0.40 m/E {ide}"
    )
    assert h["x-amzn-kiro-agent-mode"] == "spec"
    assert (h["authorization"], h["amz-sdk-invocation-id"]) == ("Bearer tok", "inv")
    assert all("1.1.14" not in v and "1.0.34" not in v for v in h.values())


def test_the_built_in_headers_are_unchanged_in_shape() -> None:
    h = _chat_headers(BUILT_IN)
    assert list(h) == [
        "authorization",
        "content-type",
        "accept",
        "x-amzn-codewhisperer-optout",
        "x-amzn-kiro-agent-mode",
        "x-amz-user-agent",
        "user-agent",
        "amz-sdk-invocation-id",
        "amz-sdk-request",
    ]
    assert h["x-amz-user-agent"] == f"aws-sdk-js/1.0.34 KiroIDE-1.1.14-{MACHINE}"
    assert "md/nodejs#22.22.0 api/codewhispererstreaming#1.0.34 m/E" in h["user-agent"]


def test_the_os_is_stable_per_account_and_spread_over_accounts() -> None:
    machines = [f"{i:064x}" for i in range(60)]
    first = [BUILT_IN.os_for(m) for m in machines]
    assert first == [BUILT_IN.os_for(m) for m in machines]  # stable
    assert set(first) == set(BUILT_IN.os_choices)  # every choice is used by some account
    for m in machines[:5]:  # and it is what the user agent says
        assert f" os/{BUILT_IN.os_for(m)} " in _chat_headers(BUILT_IN, m)["user-agent"]


# (id, JSON, what the error names)
BAD_FILES: list[tuple[str, Any, str]] = [
    ("unknown-key", {"ide_versoin": "1.2.3"}, "unknown key 'ide_versoin'"),
    ("version-with-space", {"ide_version": "1.2 3"}, "ide_version"),
    ("version-with-slash", {"sdk_version": "1/2"}, "sdk_version"),
    ("version-not-text", {"node_version": 22}, "node_version"),
    ("os-empty", {"os_choices": []}, "os_choices"),
    ("os-unknown-system", {"os_choices": ["beos#5"]}, "beos#5"),
    ("os-header-injection", {"os_choices": ["linux#6.1 m/E\r\nx: y"]}, "os_choices"),
    ("mode-upper-case", {"agent_mode": "Vibe"}, "agent_mode"),
    ("not-an-object", ["1.2.3"], "JSON object"),
]


@pytest.mark.parametrize(
    ("data", "names"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES]
)
def test_a_bad_identity_file_is_refused_naming_the_problem(
    tmp_path: Path, data: Any, names: str
) -> None:
    path = tmp_path / "identity.json"
    path.write_text(json.dumps(data))
    with pytest.raises(IdentityError, match="identity.json") as exc:
        load_identity(path)
    assert names in str(exc.value)


def test_unreadable_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="cannot read"):
        load_identity(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{ide_version: 1}")
    with pytest.raises(IdentityError, match="not JSON"):
        load_identity(broken)


def _settings(tmp_path: Path, **env: str) -> Any:
    return load_settings(env, dotenv=tmp_path / "none.env")


def test_settings_choose_the_identity(tmp_path: Path) -> None:
    assert endpoint.identity_for(_settings(tmp_path)) == BUILT_IN
    only_version = endpoint.identity_for(_settings(tmp_path, KIRO_CLIENT_VERSION="1.1.20"))
    assert only_version == dataclasses.replace(BUILT_IN, ide_version="1.1.20")
    path = tmp_path / "identity.json"
    path.write_text(json.dumps({"sdk_version": "1.0.41"}))
    from_file = endpoint.identity_for(
        _settings(tmp_path, KI2API_CLIENT_IDENTITY=str(path), KIRO_CLIENT_VERSION="1.1.20")
    )
    assert (from_file.ide_version, from_file.sdk_version) == ("1.1.20", "1.0.41")
    assert from_file.source == f"file {path}"
    path.write_text(json.dumps({"ide_version": "1.3.0"}))  # the file's own build wins
    assert (
        endpoint.identity_for(
            _settings(tmp_path, KI2API_CLIENT_IDENTITY=str(path), KIRO_CLIENT_VERSION="1.1.20")
        ).ide_version
        == "1.3.0"
    )
    path.write_text(json.dumps({"ide_version": "bad version"}))
    with pytest.raises(SettingsError, match="KI2API_CLIENT_IDENTITY"):
        endpoint.identity_for(_settings(tmp_path, KI2API_CLIENT_IDENTITY=str(path)))


def test_the_cli_refuses_to_start_with_a_bad_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "identity.json"
    path.write_text(json.dumps({"os_choices": ["amiga#3.1"]}))
    monkeypatch.setenv("KI2API_ENV_FILE", str(tmp_path / "none.env"))
    monkeypatch.setenv("KI2API_CLIENT_IDENTITY", str(path))
    assert main(["doctor", "--no-upstream"]) == 2
    err = capsys.readouterr().err
    assert "configuration error: KI2API_CLIENT_IDENTITY" in err and "amiga#3.1" in err


def test_doctor_shows_the_identity_in_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "identity.json"
    path.write_text(json.dumps({"ide_version": "1.2.9"}))
    monkeypatch.setenv("KI2API_ENV_FILE", str(tmp_path / "none.env"))
    monkeypatch.setenv("KI2API_CLIENT_IDENTITY", str(path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KIRO_CREDS_FILE", str(tmp_path / "no-login.json"))
    before = endpoint.client_identity()
    try:
        main(["doctor", "--no-upstream"])
    finally:
        endpoint.set_identity(before)
    out = capsys.readouterr().out
    assert "client identity: KiroIDE 1.2.9, aws-sdk-js 1.0.34" in out
    assert f"(file {path})" in out
