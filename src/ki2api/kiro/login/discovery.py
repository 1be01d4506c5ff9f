"""Where the Kiro login comes from, and what kind of login a token file holds.

Discovery order (first usable wins): `KIRO_ACCESS_TOKEN` / `KIRO_REFRESH_TOKEN`, `KIRO_CREDS_FILE`,
`./data/.aws/sso/cache/kiro-auth-token.json` (relative to the work dir), then
`~/.aws/sso/cache/kiro-auth-token.json`. Only stats and reads files; never writes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.kiro.login.token_file import TokenFileError, read_token_file
from ki2api.settings import Settings

__all__ = [
    "TOKEN_FILE_NAME",
    "CredentialSource",
    "Discovery",
    "auth_method_of",
    "discover",
    "no_credentials_error",
    "token_region",
]

TOKEN_FILE_NAME = "kiro-auth-token.json"
_CACHE_DIR = Path(".aws") / "sso" / "cache"
_IDC_NAMES = frozenset({"idc", "builder-id", "builderid", "builder_id", "iam", "enterprise"})
_REGION_RE = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")


@dataclass(frozen=True)
class CredentialSource:
    kind: str  # "env" | "file"
    path: Path | None
    description: str


@dataclass(frozen=True)
class Discovery:
    source: CredentialSource | None
    searched: tuple[str, ...]  # every place looked at, in order, with what was found there


def auth_method_of(data: Mapping[str, Any]) -> str:
    """`"social"` or `"idc"` from a token file's `authMethod` (any case); guessed when absent."""
    raw = data.get("authMethod")
    if isinstance(raw, str) and raw.strip():
        key = raw.strip().lower()
        if key == "social":
            return "social"
        if key in _IDC_NAMES:
            return "idc"
        raise GatewayError(
            ErrorKind.NO_CREDENTIALS,
            f"The Kiro token file uses authMethod {raw.strip()[:40]!r}, which Ki2API does not "
            "support (supported: social, IdC / Builder ID). Log in to Kiro with Google, GitHub, "
            "AWS Builder ID or IAM Identity Center.",
        )
    return "idc" if data.get("clientIdHash") or data.get("clientId") else "social"


def token_region(data: Mapping[str, Any], default: str) -> str:
    """The SSO-OIDC region of an IdC login (`region` / `idcRegion`), else `default`."""
    for key in ("region", "idcRegion"):
        value = data.get(key)
        if isinstance(value, str) and _REGION_RE.fullmatch(value.strip()):
            return value.strip()
    return default


def _probe(path: Path) -> str | None:
    """None when `path` holds a usable token file, else why not (for the searched list)."""
    if not path.exists():
        return "not found"
    try:
        data = read_token_file(path).data
    except TokenFileError as exc:
        return str(exc)
    if not any(isinstance(data.get(key), str) for key in ("accessToken", "refreshToken")):
        return "no accessToken or refreshToken in it"
    return None


def _env_source(settings: Settings) -> CredentialSource | None:
    names = [
        name
        for name, value in (
            ("KIRO_ACCESS_TOKEN", settings.kiro_access_token),
            ("KIRO_REFRESH_TOKEN", settings.kiro_refresh_token),
        )
        if value
    ]
    if not names:
        return None
    return CredentialSource("env", None, "environment variable(s) " + " and ".join(names))


def _candidates(settings: Settings) -> list[tuple[str, Path | None]]:
    creds = settings.kiro_creds_file
    if creds is not None and not creds.is_absolute():
        creds = settings.work_dir / creds
    return [
        ("KIRO_CREDS_FILE", creds),
        ("the work directory", settings.work_dir / "data" / _CACHE_DIR / TOKEN_FILE_NAME),
        ("the home directory", settings.home_dir / _CACHE_DIR / TOKEN_FILE_NAME),
    ]


def discover(settings: Settings) -> Discovery:
    """Find the Kiro login to use; `searched` lists every place looked at, in order."""
    env = _env_source(settings)
    if env is not None:
        return Discovery(env, (f"environment: {env.description} (set)",))
    searched = ["environment: KIRO_ACCESS_TOKEN / KIRO_REFRESH_TOKEN (not set)"]
    for label, path in _candidates(settings):
        if path is None:
            searched.append(f"{label} (not set)")
            continue
        problem = _probe(path)
        if problem is None:
            searched.append(f"{path} ({label}): found")
            source = CredentialSource("file", path, f"token file {path} (from {label})")
            return Discovery(source, tuple(searched))
        searched.append(f"{path} ({label}): {problem}")
    return Discovery(None, tuple(searched))


def no_credentials_error(discovery: Discovery) -> GatewayError:
    """The NO_CREDENTIALS error: every place searched, and how to log in."""
    places = "; ".join(f"{i}) {place}" for i, place in enumerate(discovery.searched, 1))
    return GatewayError(
        ErrorKind.NO_CREDENTIALS,
        f"No Kiro login found. Looked at: {places}. To fix: sign in with the Kiro IDE (it writes "
        f"~/.aws/sso/cache/{TOKEN_FILE_NAME}), or set KIRO_CREDS_FILE to a {TOKEN_FILE_NAME} "
        "file, or set KIRO_REFRESH_TOKEN (and optionally KIRO_ACCESS_TOKEN).",
    )
