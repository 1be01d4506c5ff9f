"""kiro/login/profiles.py: the ListAvailableProfiles parser and the IDE's profile.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ki2api.kiro.login.profiles import ide_profile_arn, ide_profile_paths, parse_profiles

ARN = "arn:aws:codewhisperer:us-east-1:123456789012:profile/ABCDEF123456"
EU = "arn:aws:codewhisperer:eu-central-1:210987654321:profile/ZYX987"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"profiles": [{"arn": ARN, "profileName": "p"}]}, ([ARN], None)),
        ({"profiles": [{"arn": ARN}, {"arn": EU}], "nextToken": "t"}, ([ARN, EU], "t")),
        ({"profiles": [{"arn": "not-an-arn"}, {"name": "x"}, "junk"]}, ([], None)),
        ({"profiles": [], "nextToken": ""}, ([], None)),
        ({"profiles": None}, ([], None)),
        ([], ([], None)),
        (None, ([], None)),
    ],
)
def test_parse_profiles(payload: Any, expected: tuple[list[str], str | None]) -> None:
    assert parse_profiles(payload) == expected


@pytest.mark.parametrize(
    ("platform", "tail"),
    [
        ("linux", ".config/Kiro/User/globalStorage/kiro.kiroagent/profile.json"),
        (
            "darwin",
            "Library/Application Support/Kiro/User/globalStorage/kiro.kiroagent/profile.json",
        ),
        ("win32", "AppData/Roaming/Kiro/User/globalStorage/kiro.kiroagent/profile.json"),
    ],
)
def test_ide_profile_paths(tmp_path: Path, platform: str, tail: str) -> None:
    assert ide_profile_paths(tmp_path, platform) == [tmp_path / tail]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (json.dumps({"arn": ARN, "name": "Kiro"}), ARN),
        (json.dumps({"profileArn": EU}), EU),
        (json.dumps({"arn": "arn:aws:codewhisperer:us-east-1:1:profile/X"}), None),
        ("not json", None),
        (json.dumps([ARN]), None),
        (None, None),  # no file
    ],
)
def test_ide_profile_arn(tmp_path: Path, content: str | None, expected: str | None) -> None:
    path = ide_profile_paths(tmp_path, "linux")[0]
    if content is not None:
        path.parent.mkdir(parents=True)
        path.write_text(content)
    assert ide_profile_arn(tmp_path, "linux") == expected
