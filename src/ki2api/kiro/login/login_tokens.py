"""A new login's tokens as the Kiro IDE writes them (docs/kiro-protocol.md §1.1, §1.2).

`ki2api login` ends here: `idc_login_json` / `social_login_json` shape the token file,
`write_login` writes `kiro-auth-token.json` (and, for Builder ID, the client registration
companion `{clientIdHash}.json`, which the IdC refresh needs) atomically with mode 0600. For the
store (`--store`), `store_login_json` keeps the client inline instead of in a companion file.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ki2api.kiro.login.device_flow import BUILDER_ID_START_URL, Registered
from ki2api.kiro.login.refresh import RefreshedTokens
from ki2api.kiro.login.token_file import format_expires_at, write_token_file

__all__ = [
    "LoginExists",
    "client_id_hash",
    "idc_login_json",
    "social_login_json",
    "store_login_json",
    "write_login",
]


class LoginExists(Exception):
    """A token file is already there (a login of the IDE, maybe): not replaced without force."""


def client_id_hash(start_url: str = BUILDER_ID_START_URL) -> str:
    """The IDE's name for the registration file: SHA-1 of `{"startUrl":"<url>"}`."""
    text = json.dumps({"startUrl": start_url}, separators=(",", ":"))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()  # noqa: S324 (a name, not security)


def _expires(tokens: RefreshedTokens, now: datetime) -> str:
    return format_expires_at(now + timedelta(seconds=tokens.expires_in or 3600))


def idc_login_json(
    tokens: RefreshedTokens, *, region: str, start_url: str, now: datetime | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "accessToken": tokens.access_token,
        "refreshToken": tokens.refresh_token,
        "expiresAt": _expires(tokens, now or datetime.now(UTC)),
        "clientIdHash": client_id_hash(start_url),
        "authMethod": "IdC",
        "provider": "BuilderId" if start_url == BUILDER_ID_START_URL else "Enterprise",
        "region": region,
    }
    return data


def social_login_json(
    tokens: RefreshedTokens, *, provider: str, now: datetime | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "accessToken": tokens.access_token,
        "refreshToken": tokens.refresh_token,
        "expiresAt": _expires(tokens, now or datetime.now(UTC)),
        "authMethod": "social",
        "provider": provider,
    }
    if tokens.profile_arn:
        data["profileArn"] = tokens.profile_arn
    return data


def registration_json(client: Registered) -> dict[str, Any]:
    expires = client.expires_at
    when = datetime.fromtimestamp(expires, UTC) if expires else datetime.now(UTC) + timedelta(90)
    return {
        "clientId": client.registration.client_id,
        "clientSecret": client.registration.client_secret,
        "expiresAt": format_expires_at(when),
    }


def store_login_json(data: dict[str, Any], client: Registered | None) -> dict[str, Any]:
    """The token JSON for the store: an IdC login carries its client inline."""
    out = dict(data)
    if client is not None:
        out["clientId"] = client.registration.client_id
        out["clientSecret"] = client.registration.client_secret
    return out


def write_login(
    path: Path, data: dict[str, Any], client: Registered | None, *, force: bool = False
) -> list[Path]:
    """Write the token file (and the companion of an IdC login) atomically, mode 0600; the
    paths written. `LoginExists` when `path` exists and not `force`."""
    if path.exists() and not force:
        raise LoginExists(f"{path} already exists (a Kiro IDE login?)")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    written: list[Path] = []
    if client is not None:  # first the registration, so the token file never lacks it
        companion = path.parent / f"{data['clientIdHash']}.json"
        write_token_file(companion, registration_json(client))
        written.append(companion)
    write_token_file(path, data)
    written.insert(0, path)
    return written
