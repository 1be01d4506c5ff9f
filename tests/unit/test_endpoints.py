"""kiro.endpoints: the Q region and host of each account (docs/kiro-protocol.md §3.1)."""

from __future__ import annotations

import pytest

from ki2api.kiro.endpoint import api_base, chat_region, region_of_arn

EU_ARN = "arn:aws:codewhisperer:eu-central-1:123456789012:profile/ABCDEFGHIJKL"
US_ARN = "arn:aws:codewhisperer:us-east-1:123456789012:profile/ABCDEFGHIJKL"
ODD_ARN = "arn:aws:codewhisperer:ap-southeast-2:123456789012:profile/ABCDEFGHIJKL"

REGIONS = [
    ("nothing known", None, None, None, "us-east-1"),
    ("eu profile", EU_ARN, None, None, "eu-central-1"),
    ("us profile beats an eu login", US_ARN, "eu-west-1", None, "us-east-1"),
    ("eu idc login", None, "eu-west-1", None, "eu-central-1"),
    ("eu-north login", None, "eu-north-1", None, "eu-central-1"),
    ("us-east-2 login calls us-east-1", None, "us-east-2", None, "us-east-1"),
    ("asia login calls us-east-1", None, "ap-northeast-1", None, "us-east-1"),
    ("profile of no Q region: the login decides", ODD_ARN, "eu-west-3", None, "eu-central-1"),
    ("override wins", EU_ARN, "eu-west-1", "us-east-1", "us-east-1"),
    ("malformed arn ignored", "arn:aws:iam::1:role/x", None, None, "us-east-1"),
]


@pytest.mark.parametrize(
    ("arn", "login", "override", "want"), [r[1:] for r in REGIONS], ids=[r[0] for r in REGIONS]
)
def test_chat_region(arn: str | None, login: str | None, override: str | None, want: str) -> None:
    assert chat_region(profile_arn=arn, login_region=login, override=override) == want


@pytest.mark.parametrize(
    ("template", "region", "want"),
    [
        (
            "https://q.{region}.amazonaws.com",
            "eu-central-1",
            "https://q.eu-central-1.amazonaws.com",
        ),
        ("http://127.0.0.1:9/{region}/", "us-east-1", "http://127.0.0.1:9/us-east-1"),
        ("https://proxy.example/kiro", "eu-central-1", "https://proxy.example/kiro"),
    ],
)
def test_api_base(template: str, region: str, want: str) -> None:
    assert api_base(template, region) == want


def test_region_of_arn() -> None:
    assert region_of_arn(EU_ARN) == "eu-central-1"
    assert region_of_arn(None) is None and region_of_arn("") is None
