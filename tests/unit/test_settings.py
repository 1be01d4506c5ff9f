"""Settings: the environment and .env read in one place, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from ki2api.settings import (
    Settings,
    SettingsError,
    load_settings,
    parse_dotenv,
    settings_table,
)


def test_repr_hides_secrets() -> None:
    s = Settings(
        api_keys=("client-key-1",), kiro_access_token="aoa-SECRET", kiro_refresh_token="aor-X"
    )
    text = repr(s) + str(s.redacted())
    assert "SECRET" not in text and "aor-X" not in text and "client-key-1" not in text


DOTENV = [
    ("plain", "A=1", {"A": "1"}),
    ("export and quotes", "export B='two words'\nC=\"x=y\"", {"B": "two words", "C": "x=y"}),
    ("comments and blanks", "# c\n\nD = 4 \nnot a line", {"D": "4"}),
]


@pytest.mark.parametrize(("name", "text", "expected"), DOTENV, ids=[d[0] for d in DOTENV])
def test_parse_dotenv(name: str, text: str, expected: dict[str, str]) -> None:
    assert parse_dotenv(text) == expected


def test_defaults_match_the_original(tmp_path: Path) -> None:
    s = load_settings({"HOME": str(tmp_path)}, dotenv=tmp_path / "none.env")
    assert (s.port, s.api_keys, s.host) == (8989, ("ki2api-key-2024",), "127.0.0.1")
    # each account's own Q region fills `{region}` (kiro/endpoint.py); no region forced
    assert s.kiro_api_base == "https://q.{region}.amazonaws.com" and s.kiro_region is None
    assert s.kiro_auth_base == "https://prod.us-east-1.auth.desktop.kiro.dev"


def test_environment_overrides_dotenv(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=9000\nAPI_KEY=a,b\nKIRO_REGION=eu-central-1\n")
    s = load_settings({"PORT": "9100", "HOME": str(tmp_path)}, dotenv=env_file)
    assert s.port == 9100 and s.api_keys == ("a", "b")
    assert s.kiro_region == "eu-central-1"  # the override: every account's Q region
    assert s.kiro_auth_base == "https://prod.eu-central-1.auth.desktop.kiro.dev"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"KI2API_KEEPALIVE_S": "soon"}, "KI2API_KEEPALIVE_S"),
        ({"KI2API_MODEL_MAP": "[1]"}, "KI2API_MODEL_MAP"),
        ({"API_KEY": " , "}, "API_KEY"),
    ],
    ids=["port", "keepalive", "model map", "empty key"],
)
def test_bad_values_name_the_variable(tmp_path: Path, env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        load_settings(env, dotenv=tmp_path / "none.env")


def test_each_variable_is_one_row_of_the_table_with_its_help() -> None:
    table = settings_table()
    names = [spec.env for _, spec in table if spec.env is not None]
    assert len(names) == len(set(names)) and all(spec.help.strip() for _, spec in table)
    assert [field for field, _ in table][:3] == ["api_keys", "host", "port"]
    assert {"API_KEY", "PORT", "KIRO_CLIENT_VERSION", "KI2API_ALLOWED_HOSTS"} <= set(names)


def test_an_empty_environment_gives_the_declared_defaults(tmp_path: Path) -> None:
    """The table's defaults are the defaults: reading no variable changes none of them."""
    loaded = load_settings({"HOME": str(tmp_path)}, dotenv=tmp_path / "none.env")
    assert loaded == Settings(home_dir=tmp_path)
