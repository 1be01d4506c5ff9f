"""The client version in the Kiro headers is current (docs/kiro-protocol.md §3.2: IDE builds
were 1.0.309 / 1.1.14 by Aug-Sep 2026) and configurable in one place (`KIRO_CLIENT_VERSION`); the
request limits' settings (`KI2API_MAX_TOOLS`, `KI2API_MAX_IMAGE_BYTES_PER_REQUEST`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ki2api.kiro import endpoint as headers
from ki2api.kiro.request.budget import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_TOOLS
from ki2api.settings import SettingsError, load_settings

# --- settings and headers ------------------------------------------------------------------------


def test_settings_defaults_and_overrides(tmp_path: Path) -> None:
    s = load_settings({}, dotenv=tmp_path / "none.env")
    assert s.max_tools == DEFAULT_MAX_TOOLS
    assert s.max_image_bytes_per_request == DEFAULT_MAX_IMAGE_BYTES
    assert s.kiro_client_version == headers.KIRO_VERSION == "1.1.14"
    env = {
        "KI2API_MAX_TOOLS": "50",
        "KI2API_MAX_IMAGE_BYTES_PER_REQUEST": "1000",
        "KIRO_CLIENT_VERSION": "1.2.3",
    }
    s = load_settings(env, dotenv=tmp_path / "none.env")
    assert (s.max_tools, s.max_image_bytes_per_request, s.kiro_client_version) == (
        50,
        1000,
        "1.2.3",
    )


@pytest.mark.parametrize("bad", ["1.2 3", "1/2", "x" * 40, "-1"])
def test_a_bad_client_version_names_the_variable(tmp_path: Path, bad: str) -> None:
    with pytest.raises(SettingsError, match="KIRO_CLIENT_VERSION"):
        load_settings({"KIRO_CLIENT_VERSION": bad}, dotenv=tmp_path / "none.env")


def test_headers_carry_the_configured_version() -> None:
    def agents() -> tuple[str, str]:
        h = headers.chat_headers("tok", machine="m" * 64, invocation_id="id")
        return h["user-agent"], h["x-amz-user-agent"]

    assert all(f"KiroIDE-{headers.KIRO_VERSION}-{'m' * 64}" in a for a in agents())
    assert all("0.11.107" not in a for a in agents())  # the stale 2025 build
    try:
        headers.set_client_version("9.8.7")
        assert headers.client_version() == "9.8.7"
        assert all(a.endswith(f"KiroIDE-9.8.7-{'m' * 64}") for a in agents())
        with pytest.raises(ValueError):
            headers.set_client_version("a b")
    finally:
        headers.set_client_version(headers.KIRO_VERSION)
