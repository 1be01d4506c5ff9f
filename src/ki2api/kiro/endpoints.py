"""Which Kiro host an account talks to: pure, no I/O (docs/kiro-protocol.md §3.1, §10.3).

The Q API lives in two regions only, us-east-1 and eu-central-1, and a login must call the one
of its own region: a European login sent to us-east-1 (or the reverse) gets 403 "bearer token
invalid" or a 400. So the chat host is chosen per account:

1. `KIRO_REGION`, when set, for every account (the override);
2. else the region of the account's profileArn when it is a Q region (the profile is where its
   data lives: `arn:aws:codewhisperer:eu-central-1:…`);
3. else from the login's own region (an IdC token file's `region`): European regions →
   eu-central-1, every other → us-east-1.

`KIRO_API_BASE` may hold `{region}` (the default `https://q.{region}.amazonaws.com` does); a base
without it is used as it is for every account (a proxy, or the emulator of one region).
"""

from __future__ import annotations

import re

from ki2api.settings import DEFAULT_API_BASE, Settings

__all__ = [
    "DEFAULT_API_BASE",
    "Q_REGIONS",
    "account_api_base",
    "api_base",
    "chat_region",
    "region_of_arn",
]

Q_REGIONS = ("us-east-1", "eu-central-1")
_ARN = re.compile(r"^arn:aws[a-z-]*:codewhisperer:([a-z]{2}(?:-[a-z]+)+-\d):")


def region_of_arn(profile_arn: str | None) -> str | None:
    """`eu-central-1` of `arn:aws:codewhisperer:eu-central-1:123456789012:profile/X`."""
    if not profile_arn:
        return None
    found = _ARN.match(profile_arn.strip())
    return found.group(1) if found else None


def chat_region(
    *, profile_arn: str | None, login_region: str | None, override: str | None = None
) -> str:
    """The Q region an account's chat, usage, models and /mcp calls go to."""
    if override:
        return override
    arn_region = region_of_arn(profile_arn)
    if arn_region in Q_REGIONS:
        return arn_region
    if login_region and login_region.strip().lower().startswith("eu-"):
        return "eu-central-1"
    return "us-east-1"


def api_base(template: str, region: str) -> str:
    """The base URL for `region` (no trailing slash)."""
    return template.replace("{region}", region).rstrip("/")


def account_api_base(
    settings: Settings, *, profile_arn: str | None, login_region: str | None
) -> str:
    """The base URL of one account's Q host under these settings."""
    region = chat_region(
        profile_arn=profile_arn or settings.kiro_profile_arn,
        login_region=login_region,
        override=settings.kiro_region,
    )
    return api_base(settings.kiro_api_base, region)
