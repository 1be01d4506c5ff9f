"""ki2api.kiro.login.token_file: expiresAt formats, companion lookup, atomic write-back."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from ki2api.kiro.login import token_file as tokenfile
from ki2api.kiro.login.token_file import (
    ExpiryFormat,
    TokenFileError,
    find_client_registration,
    format_expires_at,
    parse_expires_at,
    read_token_file,
    write_token_file,
)

EXAMPLE = datetime(2025, 12, 5, 7, 54, 17, tzinfo=UTC)

# (text as a tool writes it, the instant it means, digits after the seconds, zone suffix)
ROUND_TRIP = [
    ("2025-12-05T07:54:17.089Z", EXAMPLE.replace(microsecond=89_000), 3, "Z"),  # Kiro IDE (JS)
    ("2025-12-05T07:54:17+00:00", EXAMPLE, 0, "+00:00"),  # kiro-gw, Python isoformat
    ("2025-12-05T07:54:17Z", EXAMPLE, 0, "Z"),  # zzb strftime, RFC 3339 without fraction
    ("2025-12-05T07:54:17.123456Z", EXAMPLE.replace(microsecond=123_456), 6, "Z"),
    ("2025-12-05T07:54:17.123456+00:00", EXAMPLE.replace(microsecond=123_456), 6, "+00:00"),
    ("2025-12-05T07:54:17.123456000Z", EXAMPLE.replace(microsecond=123_456), 9, "Z"),  # nanos
    ("2025-12-05T07:54:17.5Z", EXAMPLE.replace(microsecond=500_000), 1, "Z"),
    ("2025-12-05T15:54:17.089+08:00", EXAMPLE.replace(microsecond=89_000), 3, "+08:00"),
    ("2025-12-05T02:54:17-05:00", EXAMPLE, 0, "-05:00"),
    ("2025-12-05T07:54:17", EXAMPLE, 0, ""),  # no zone: read as UTC
]


@pytest.mark.parametrize(
    ("text", "instant", "digits", "suffix"), ROUND_TRIP, ids=[c[0] for c in ROUND_TRIP]
)
def test_expires_at_parses_and_round_trips(
    text: str, instant: datetime, digits: int, suffix: str
) -> None:
    parsed = parse_expires_at(text)
    assert parsed is not None
    when, fmt = parsed
    assert when == instant
    assert when.utcoffset() == timedelta(0)
    assert fmt == ExpiryFormat(digits, suffix)
    assert format_expires_at(when, fmt) == text


LATER = datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
WRITE_BACK = [
    ("js-millis", ExpiryFormat(3, "Z"), "2026-01-02T03:04:05.678Z"),
    ("offset-no-millis", ExpiryFormat(0, "+00:00"), "2026-01-02T03:04:05+00:00"),
    ("rfc3339-z", ExpiryFormat(0, "Z"), "2026-01-02T03:04:05Z"),
    ("micros-z", ExpiryFormat(6, "Z"), "2026-01-02T03:04:05.678901Z"),
    ("nanos-z", ExpiryFormat(9, "Z"), "2026-01-02T03:04:05.678901000Z"),
    ("offset-plus-8", ExpiryFormat(3, "+08:00"), "2026-01-02T11:04:05.678+08:00"),
    ("compact-offset", ExpiryFormat(0, "+0530"), "2026-01-02T08:34:05+0530"),
    ("naive", ExpiryFormat(0, ""), "2026-01-02T03:04:05"),
]


@pytest.mark.parametrize(
    ("fmt", "expected"), [c[1:] for c in WRITE_BACK], ids=[c[0] for c in WRITE_BACK]
)
def test_expires_at_written_in_the_files_style(fmt: ExpiryFormat, expected: str) -> None:
    assert format_expires_at(LATER, fmt) == expected
    parsed = parse_expires_at(expected)
    assert parsed is not None
    assert abs(parsed[0] - LATER) < timedelta(milliseconds=1) or fmt.frac_digits == 0


def test_other_accepted_spellings() -> None:
    nanos = parse_expires_at("2025-12-05T07:54:17.123456789Z")  # kiro.rs to_rfc3339 nanos
    assert nanos is not None and nanos[0] == EXAMPLE.replace(microsecond=123_456)
    assert nanos[1] == ExpiryFormat(9, "Z")
    parsed = parse_expires_at("2025-12-05 07:54:17z")
    assert parsed is not None and parsed[0] == EXAMPLE
    east = parse_expires_at("2025-12-05T08:54:17+0100")
    assert east is not None and east[0] == EXAMPLE


@pytest.mark.parametrize(
    "value",
    [
        "",
        "tomorrow",
        "2025-13-05T07:54:17Z",
        "2025-12-05T25:00:00Z",
        "2025-12-05",
        1733385257089,
        None,
    ],
    ids=["empty", "words", "month-13", "hour-25", "date-only", "epoch-number", "none"],
)
def test_unparseable_expires_at_is_none(value: object) -> None:
    assert parse_expires_at(value) is None


def test_formatting_converts_any_zone() -> None:
    tokyo = LATER.astimezone(timezone(timedelta(hours=9)))
    assert format_expires_at(tokyo, ExpiryFormat(3, "Z")) == "2026-01-02T03:04:05.678Z"


# -- companion (client registration) lookup -------------------------------------------------

HASH = "a" * 40
REG = {
    "clientId": "cid-named",
    "clientSecret": "sec-named",
    "expiresAt": "2026-03-01T00:00:00.000Z",
}
OTHER = {"clientId": "cid-other", "clientSecret": "sec-other"}
COMPANION_CASES: list[tuple[str, dict[str, Any], dict[str, Any], str | None]] = [
    (
        "named-companion",
        {"clientIdHash": HASH},
        {f"{HASH}.json": REG, "z.json": OTHER},
        "cid-named",
    ),
    ("named-missing-scan", {"clientIdHash": HASH}, {"other.json": OTHER}, "cid-other"),
    (
        "named-lacks-secret-scan",
        {"clientIdHash": HASH},
        {f"{HASH}.json": {"clientId": "x"}, "other.json": OTHER},
        "cid-other",
    ),
    ("no-hash-scan", {}, {"notes.json": {"a": 1}, "reg.json": OTHER}, "cid-other"),
    (
        "inline-wins",
        {"clientId": "cid-inline", "clientSecret": "sec-inline"},
        {"o.json": OTHER},
        "cid-inline",
    ),
    ("traversal-hash-ignored", {"clientIdHash": "../evil"}, {"ok.json": OTHER}, "cid-other"),
    ("broken-json-skipped", {"clientIdHash": HASH}, {f"{HASH}.json": "{not json"}, None),
    ("nothing", {"clientIdHash": HASH}, {}, None),
]


@pytest.mark.parametrize(
    ("token", "files", "expected"),
    [c[1:] for c in COMPANION_CASES],
    ids=[c[0] for c in COMPANION_CASES],
)
def test_client_registration_lookup(
    tmp_path: Path, token: dict[str, Any], files: dict[str, Any], expected: str | None
) -> None:
    token_path = tmp_path / "kiro-auth-token.json"
    token_data = {"accessToken": "aoa", "refreshToken": "aor", "authMethod": "IdC", **token}
    token_path.write_text(json.dumps(token_data))
    for name, content in files.items():
        text = content if isinstance(content, str) else json.dumps(content)
        (tmp_path / name).write_text(text)
    found = find_client_registration(token_path, token_data)
    assert (found.client_id if found else None) == expected
    if found is not None:
        assert found.client_secret
        assert found.client_secret not in repr(found)


# -- reading and atomic write-back ----------------------------------------------------------


def test_read_rejects_non_json_and_non_objects(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(TokenFileError, match="not valid JSON"):
        read_token_file(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(TokenFileError, match="JSON object"):
        read_token_file(bad)
    with pytest.raises(TokenFileError, match="cannot read"):
        read_token_file(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("original_text", "expect_indent", "expect_newline"),
    [
        ('{"accessToken": "a", "x": 1}', None, False),
        ('{\n  "accessToken": "a",\n  "x": 1\n}\n', 2, True),
        ('{\n    "accessToken": "a",\n    "x": 1\n}', 4, False),
    ],
    ids=["compact", "indent-2-newline", "indent-4"],
)
def test_write_back_keeps_fields_layout_and_mode(
    tmp_path: Path, original_text: str, expect_indent: int | None, expect_newline: bool
) -> None:
    path = tmp_path / "kiro-auth-token.json"
    path.write_text(original_text)
    path.chmod(0o644)
    disk = read_token_file(path)
    assert (disk.indent, disk.trailing_newline) == (expect_indent, expect_newline)
    updated = {**disk.data, "accessToken": "b"}
    write_token_file(path, updated, indent=disk.indent, trailing_newline=disk.trailing_newline)
    text = path.read_text()
    assert json.loads(text) == {"accessToken": "b", "x": 1}
    assert text == json.dumps(updated, indent=expect_indent) + ("\n" if expect_newline else "")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kiro-auth-token.json"]


def test_write_through_a_symlink_replaces_the_target(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text('{"accessToken": "a"}')
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_token_file(link, {"accessToken": "b"})
    assert link.is_symlink()
    assert json.loads(real.read_text()) == {"accessToken": "b"}


def test_failed_replace_leaves_the_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "kiro-auth-token.json"
    path.write_text('{"accessToken": "old"}')
    before = path.read_bytes()

    def refuse(src: object, dst: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tokenfile.os, "replace", refuse)
    with pytest.raises(OSError, match="Read-only"):
        write_token_file(path, {"accessToken": "new"})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["kiro-auth-token.json"]


def test_unwritable_directory_raises_permission_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permission bits (covered by the os.replace test)")
    path = tmp_path / "kiro-auth-token.json"
    path.write_text('{"accessToken": "old"}')
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            write_token_file(path, {"accessToken": "new"})
    finally:
        tmp_path.chmod(0o755)
    assert json.loads(path.read_text()) == {"accessToken": "old"}
