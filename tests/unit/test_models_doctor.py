"""`ki2api doctor`'s model mapping table: the pure table, and the whole doctor against the
emulator (which lists the Kiro models it knows through ListAvailableModels)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from ki2api.cli.doctor import mapping_lines, run_doctor
from ki2api.core.models import default_catalogue
from tests.conftest import Account, gateway_settings


def _row(lines: list[str], public: str) -> str:
    found = [ln for ln in lines if ln.startswith(f"{public} ")]
    assert len(found) == 1, lines
    return " ".join(found[0].split())


TABLE_CASES = [
    pytest.param(None, "claude-opus-4-8", "claude-opus-4-8 -> claude-opus-4.8", id="no upstream"),
    pytest.param(
        {"claude-opus-4.8"},
        "claude-opus-4-8",
        "claude-opus-4-8 -> claude-opus-4.8 [offered]",
        id="offered",
    ),
    pytest.param(
        {"claude-opus-4.8"},
        "claude-sonnet-4-5",
        "claude-sonnet-4-5 -> claude-sonnet-4.5 [NOT OFFERED]",
        id="not offered",
    ),
    pytest.param(
        set(),
        "claude-opus[-latest]",
        "claude-opus[-latest] -> claude-opus-5 [NOT OFFERED]"
        " (no version: the newest; see docs/models.md)",
        id="family row",
    ),
]


@pytest.mark.parametrize(("offered", "public", "row"), TABLE_CASES)
def test_mapping_lines(offered: set[str] | None, public: str, row: str) -> None:
    assert _row(mapping_lines(default_catalogue(), offered), public) == row


def test_mapping_lines_list_every_entry_once_and_in_order() -> None:
    catalogue = default_catalogue()
    lines = mapping_lines(catalogue, None)
    listed = [ln.split(" -> ")[0].strip() for ln in lines[: len(catalogue.all())]]
    assert listed == [m.id for m in catalogue.all()]
    assert [ln for ln in lines if "(no version: the newest" in ln] == lines[len(listed) :]


def test_mapping_lines_without_fallback() -> None:
    lines = mapping_lines(default_catalogue(family_fallback=False), None)
    assert not any("(no version: the newest" in ln for ln in lines)
    assert lines[-1] == "other names: 404 model_not_found (KI2API_MODEL_FALLBACK is off)"


def test_doctor_shows_the_mapping_and_what_the_account_offers(
    account: Account, emulator_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = gateway_settings(emulator_url, account, tmp_path)
    settings = dataclasses.replace(
        settings, model_overrides={"claude-opus-4-8": "claude-opus-9.9", "gpt-4o": "auto"}
    )
    assert asyncio.run(run_doctor(settings)) == 0
    out = capsys.readouterr().out
    lines = [" ".join(ln.split()) for ln in out.splitlines()]
    assert "claude-sonnet-4-5 -> claude-sonnet-4.5 [offered]" in lines, out
    assert "claude-opus-4-8 -> claude-opus-9.9 [NOT OFFERED]" in lines, out
    assert "gpt-4o -> auto [offered]" in lines, out
    assert any(ln.startswith("claude-opus[-latest] -> claude-opus-5 [offered]") for ln in lines)
    assert "this account is not offered: claude-opus-9.9" in out, out


def test_doctor_without_upstream_shows_the_mapping_only(
    account: Account, emulator_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = gateway_settings(emulator_url, account, tmp_path)
    assert asyncio.run(run_doctor(settings, contact_upstream=False)) == 0
    out = capsys.readouterr().out
    assert "claude-haiku-4-5 -> claude-haiku-4.5" in [
        " ".join(ln.split()) for ln in out.splitlines()
    ]
    assert "offered" not in out.lower(), out
