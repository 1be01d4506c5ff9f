"""Kiro token files as the IDE writes them (docs/kiro-protocol.md §1.1, §1.2) and
`write_credentials`."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "BUILDER_ID_START_URL",
    "TOKEN_FILE_NAME",
    "client_id_hash",
    "idc_token_file",
    "iso_ms",
    "registration_file",
    "social_token_file",
    "write_credentials",
]

TOKEN_FILE_NAME = "kiro-auth-token.json"
BUILDER_ID_START_URL = "https://view.awsapps.com/start"


def iso_ms(epoch_s: float) -> str:
    """JavaScript `Date.toISOString()`: `YYYY-MM-DDTHH:MM:SS.mmmZ`."""
    t = datetime.fromtimestamp(epoch_s, UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def client_id_hash(start_url: str = BUILDER_ID_START_URL) -> str:
    """kiro-ext: hex SHA-1 of the JSON string `{"startUrl":"<startUrl>"}` (40 hex)."""
    return hashlib.sha1(orjson.dumps({"startUrl": start_url})).hexdigest()


def social_token_file(
    access: str, refresh: str, profile_arn: str, expires_at: float, provider: str = "Google"
) -> dict[str, Any]:
    return {
        "accessToken": access,
        "refreshToken": refresh,
        "profileArn": profile_arn,
        "expiresAt": iso_ms(expires_at),
        "authMethod": "social",
        "provider": provider,
    }


def idc_token_file(
    access: str, refresh: str, expires_at: float, id_hash: str, region: str = "us-east-1"
) -> dict[str, Any]:
    return {
        "accessToken": access,
        "refreshToken": refresh,
        "expiresAt": iso_ms(expires_at),
        "clientIdHash": id_hash,
        "authMethod": "IdC",
        "provider": "BuilderId",
        "region": region,
    }


def registration_file(client_id: str, client_secret: str, expires_at: float) -> dict[str, Any]:
    return {"clientId": client_id, "clientSecret": client_secret, "expiresAt": iso_ms(expires_at)}


def _write_private(path: Path, content: Mapping[str, Any]) -> None:
    """Write JSON with mode 0600 via a temporary file and an atomic rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if sys.platform != "win32":  # no fchmod there (Python < 3.13)
            os.fchmod(fd, 0o600)
        os.write(fd, orjson.dumps(dict(content), option=orjson.OPT_INDENT_2))
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_credentials(dir: Path, accounts: list[dict[str, Any]]) -> list[Path]:
    """Write `dir/<id>/kiro-auth-token.json` (+ the IdC `{clientIdHash}.json`) for each account.

    `accounts` are items as answered by `POST /_emulator/accounts`:
    `{"id", "token_file", "client_registration"}`. Returns the token file paths, in order.
    """
    paths: list[Path] = []
    for acct in accounts:
        folder = Path(dir) / str(acct["id"])
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        token_file = acct["token_file"]
        path = folder / TOKEN_FILE_NAME
        _write_private(path, token_file)
        registration = acct.get("client_registration")
        if registration:
            _write_private(folder / f"{token_file['clientIdHash']}.json", registration)
        paths.append(path)
    return paths
