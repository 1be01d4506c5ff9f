"""ki2api.kiro.login.discovery: where the login comes from, and what kind it is."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.kiro.login.credentials import KiroCredentials, discover
from ki2api.kiro.login.discovery import auth_method_of, token_region
from ki2api.settings import Settings

TOKEN = {"accessToken": "aoa-x", "refreshToken": "aor-x", "authMethod": "social"}
CACHE = Path(".aws/sso/cache/kiro-auth-token.json")

# Each case: which places hold what. "ok" = a usable token file, "bad" = not JSON,
# "empty" = JSON without tokens, "missing" = the path is configured but absent.
# `creds` is KIRO_CREDS_FILE (relative to the work dir when it does not start with "/").
DISCOVERY_CASES: list[tuple[str, dict[str, Any], str | None]] = [
    (
        "env-both-wins",
        {"env_access": True, "env_refresh": True, "creds": "ok", "work": "ok"},
        "env",
    ),
    ("env-refresh-only", {"env_refresh": True, "home": "ok"}, "env"),
    ("env-access-only", {"env_access": True, "home": "ok"}, "env"),
    ("creds-file-before-work", {"creds": "ok", "work": "ok", "home": "ok"}, "creds"),
    ("creds-missing-falls-through", {"creds": "missing", "work": "ok", "home": "ok"}, "work"),
    ("work-before-home", {"work": "ok", "home": "ok"}, "work"),
    ("home-only", {"home": "ok"}, "home"),
    ("broken-work-file-skipped", {"work": "bad", "home": "ok"}, "home"),
    ("tokenless-work-file-skipped", {"work": "empty", "home": "ok"}, "home"),
    ("nothing", {}, None),
]


def _write(path: Path, what: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if what == "ok":
        path.write_text(json.dumps(TOKEN))
    elif what == "bad":
        path.write_text("{not json")
    elif what == "empty":
        path.write_text(json.dumps({"authMethod": "social"}))


def _settings(tmp_path: Path, layout: dict[str, Any]) -> tuple[Settings, dict[str, Path]]:
    home, work = tmp_path / "home", tmp_path / "work"
    places = {
        "creds": work / "custom" / "my-token.json",
        "work": work / "data" / CACHE,
        "home": home / CACHE,
    }
    for name, path in places.items():
        if name in layout:
            _write(path, layout[name])
    settings = dataclasses.replace(
        Settings(),
        home_dir=home,
        work_dir=work,
        kiro_access_token="aoa-env" if layout.get("env_access") else None,
        kiro_refresh_token="aor-env" if layout.get("env_refresh") else None,
        kiro_creds_file=Path("custom/my-token.json") if "creds" in layout else None,
    )
    return settings, places


@pytest.mark.parametrize(
    ("layout", "expected"),
    [c[1:] for c in DISCOVERY_CASES],
    ids=[c[0] for c in DISCOVERY_CASES],
)
def test_discovery_order(tmp_path: Path, layout: dict[str, Any], expected: str | None) -> None:
    settings, places = _settings(tmp_path, layout)
    found = discover(settings)
    if expected is None:
        assert found.source is None
    elif expected == "env":
        assert found.source is not None and found.source.kind == "env"
        assert found.source.path is None
    else:
        assert found.source is not None and found.source.kind == "file"
        assert found.source.path == places[expected]
        assert str(places[expected]) in found.source.description
    # every place up to the one chosen is listed, in order, and no token ever is
    text = "\n".join(found.searched)
    assert "aoa-" not in text and "aor-" not in text
    if expected != "env":
        order = ["creds", "work", "home"]
        stop = order.index(expected) + 1 if expected else 3
        shown = [str(places[n]) for n in order[:stop] if n in layout or n != "creds"]
        positions = [text.find(p) for p in shown]
        assert all(pos >= 0 for pos in positions) and positions == sorted(positions)


def test_nothing_found_lists_every_place_and_how_to_log_in(tmp_path: Path) -> None:
    settings, places = _settings(tmp_path, {})
    found = discover(settings)
    assert len(found.searched) == 4
    assert "KIRO_ACCESS_TOKEN" in found.searched[0]
    assert "KIRO_CREDS_FILE" in found.searched[1]
    assert str(places["work"]) in found.searched[2]
    assert str(places["home"]) in found.searched[3]
    with pytest.raises(GatewayError) as caught:
        KiroCredentials.from_settings(settings, http=None)  # type: ignore[arg-type]
    assert caught.value.kind is ErrorKind.NO_CREDENTIALS
    for place in (places["work"], places["home"]):
        assert str(place) in caught.value.message
    assert "Kiro IDE" in caught.value.message and "KIRO_REFRESH_TOKEN" in caught.value.message


def test_broken_file_reason_is_reported(tmp_path: Path) -> None:
    settings, places = _settings(tmp_path, {"work": "bad"})
    found = discover(settings)
    assert found.source is None
    assert any(str(places["work"]) in s and "not valid JSON" in s for s in found.searched)


AUTH_METHODS: list[tuple[dict[str, Any], str]] = [
    ({"authMethod": "social"}, "social"),
    ({"authMethod": "Social"}, "social"),
    ({"authMethod": "IdC"}, "idc"),
    ({"authMethod": "idc"}, "idc"),
    ({"authMethod": "IDC"}, "idc"),
    ({"authMethod": "builder-id"}, "idc"),
    ({"authMethod": " IdC "}, "idc"),
    ({"clientIdHash": "ab" * 20}, "idc"),
    ({"clientId": "cid", "clientSecret": "s"}, "idc"),
    ({}, "social"),
    ({"authMethod": ""}, "social"),
]


@pytest.mark.parametrize(
    ("data", "expected"), AUTH_METHODS, ids=[f"{d}->{e}" for d, e in AUTH_METHODS]
)
def test_auth_method(data: dict[str, Any], expected: str) -> None:
    assert auth_method_of(data) == expected


def test_unsupported_auth_method_is_a_clear_error() -> None:
    with pytest.raises(GatewayError) as caught:
        auth_method_of({"authMethod": "external_idp"})
    assert caught.value.kind is ErrorKind.NO_CREDENTIALS
    assert "external_idp" in caught.value.message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"region": "eu-central-1"}, "eu-central-1"),
        ({"idcRegion": "us-west-2"}, "us-west-2"),
        ({"region": "evil.example.com/x"}, "us-east-1"),
        ({}, "us-east-1"),
    ],
    ids=["region", "idcRegion", "not-a-region", "absent"],
)
def test_token_region(data: dict[str, Any], expected: str) -> None:
    assert token_region(data, "us-east-1") == expected
