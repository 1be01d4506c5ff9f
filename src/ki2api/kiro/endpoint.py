"""Where an account's calls go and how they present themselves: pure, no I/O.

**The host** (docs/kiro-protocol.md §3.1, §1.3).

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

**The headers** (docs/kiro-protocol.md §3.2) mimic the Kiro IDE's AWS SDK client.

The client versions they name live in `kiro/client_identity.py` and only there. A stale IDE
version in the user agent is a risk (docs/kiro-protocol.md §3.2, §8), so the identity is set once
at start (`set_identity`, from `KI2API_CLIENT_IDENTITY` and `KIRO_CLIENT_VERSION`); every header
set built afterwards carries it. The OS named is chosen per account (by its machine id).

A Kiro API key (`ksk_…`, docs/kiro-protocol.md §1.4) is sent as the bearer token itself with one
more header, `tokentype: API_KEY`; `chat_headers` adds it whenever the token is such a key, so the
chat, ListAvailableModels, getUsageLimits and /mcp calls of an API-key account all carry it.
"""

from __future__ import annotations

import functools
import hashlib
import re

from ki2api.kiro.client_identity import BUILT_IN, ClientIdentity, IdentityError, load_identity
from ki2api.settings import DEFAULT_API_BASE, Settings, SettingsError

__all__ = [
    "API_KEY_PREFIX",
    "DEFAULT_API_BASE",
    "KIRO_VERSION",
    "NODE_VERSION",
    "Q_REGIONS",
    "SDK_VERSION",
    "account_api_base",
    "api_base",
    "chat_headers",
    "chat_region",
    "client_identity",
    "client_version",
    "identity_for",
    "is_api_key",
    "machine_id",
    "region_of_arn",
    "set_client_version",
    "set_identity",
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


KIRO_VERSION = BUILT_IN.ide_version  # the Kiro IDE build named in the user agent (default)
SDK_VERSION = BUILT_IN.sdk_version  # aws-sdk-js codewhispererstreaming client
NODE_VERSION = BUILT_IN.node_version

_identity = BUILT_IN
# machine id -> the identity's headers for it (the same on every call of the account)
_identity_headers: dict[str, dict[str, str]] = {}


def set_identity(identity: ClientIdentity) -> None:
    """Present every Kiro call from now on as `identity` (from settings, at start)."""
    global _identity
    _identity = identity
    _identity_headers.clear()


def client_identity() -> ClientIdentity:
    return _identity


def identity_for(settings: Settings) -> ClientIdentity:
    """The identity these settings ask for: `KI2API_CLIENT_IDENTITY`'s file over the built-in
    set with `KIRO_CLIENT_VERSION` as the IDE build (a file naming `ide_version` wins)."""
    base = BUILT_IN.with_ide_version(settings.kiro_client_version)
    path = settings.client_identity_file
    if path is None:
        return base
    try:
        return load_identity(path, base=base)
    except IdentityError as exc:
        raise SettingsError(f"KI2API_CLIENT_IDENTITY: {exc}") from None


def set_client_version(version: str) -> None:
    """Name IDE build `version` in the headers from now on (ValueError when malformed)."""
    set_identity(_identity.with_ide_version(version))


def client_version() -> str:
    return _identity.ide_version


@functools.lru_cache(maxsize=4096)
def machine_id(seed: str) -> str:
    """A stable 64-hex machine id per account (never derived from a secret we would log)."""
    return hashlib.sha256(f"ki2api-machine/{seed}".encode()).hexdigest()


API_KEY_PREFIX = "ksk_"  # a Kiro API key; OAuth access tokens start "aoa" (or were JWTs)


def is_api_key(token: str) -> bool:
    """Is this bearer a Kiro API key (sent with `tokentype: API_KEY`) rather than a login's
    access token?"""
    return token.startswith(API_KEY_PREFIX)


def chat_headers(access_token: str, *, machine: str, invocation_id: str) -> dict[str, str]:
    identity = _identity_headers.get(machine)
    if identity is None:  # built once per account (its user agents, its OS)
        if len(_identity_headers) >= 4096:
            _identity_headers.clear()
        identity = _identity_headers[machine] = _identity.headers(machine)
    headers = {
        "authorization": f"Bearer {access_token}",
        "content-type": "application/json",
        "accept": "application/json",
        "x-amzn-codewhisperer-optout": "true",
        **identity,
        "amz-sdk-invocation-id": invocation_id,
        "amz-sdk-request": "attempt=1; max=3",
    }
    if is_api_key(access_token):
        headers["tokentype"] = "API_KEY"
    return headers
