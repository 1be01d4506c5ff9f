"""Where pool accounts come from: token files, directories of them, and kiro-cli's database.

Everything here only reads (files, and kiro-cli's SQLite store opened read-only) and returns
token JSON in the shape of `kiro-auth-token.json` (camelCase keys; an IdC login carries its
`clientId` / `clientSecret` inline so one object is enough to refresh it). Errors are
`AccountSourceError`, whose message names the file and never its content.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ki2api.core.errors import GatewayError
from ki2api.kiro.login.discovery import TOKEN_FILE_NAME, auth_method_of
from ki2api.kiro.login.token_file import (
    TokenFileError,
    find_client_registration,
    format_expires_at,
    parse_expires_at,
    read_token_file,
)

__all__ = [
    "KIRO_CLI_REGISTRATION_KEYS",
    "KIRO_CLI_TOKEN_KEYS",
    "AccountSourceError",
    "default_kiro_cli_db",
    "has_tokens",
    "load_token_json",
    "login_method",
    "read_kiro_cli_db",
    "safe_id",
    "scan_token_dir",
]

MAX_ID_CHARS = 40
# kiro-cli's token keys, in order of preference, and the login kind each holds
KIRO_CLI_TOKEN_KEYS: tuple[tuple[str, str], ...] = (
    ("kirocli:social:token", "social"),
    ("kirocli:odic:token", "IdC"),
    ("codewhisperer:odic:token", "IdC"),
)
KIRO_CLI_REGISTRATION_KEYS = (
    "kirocli:odic:device-registration",
    "codewhisperer:odic:device-registration",
)
_EXTERNAL_IDP_KEY = "kirocli:external-idp:token"
_PROFILE_KEY = "api.codewhisperer.profile"
_UNSAFE = re.compile(r"[^a-z0-9_-]+")


class AccountSourceError(Exception):
    """A token source cannot be used; the message names the path, never a token."""


def has_tokens(data: Mapping[str, Any]) -> bool:
    """True when `data` holds a non-empty accessToken or refreshToken."""
    return any(
        isinstance(data.get(k), str) and data.get(k) for k in ("accessToken", "refreshToken")
    )


def login_method(data: Mapping[str, Any], *, where: str) -> str:
    """ "social" or "idc" for a usable login; `AccountSourceError` (naming `where`, never the
    content) when it has no token or an unsupported kind."""
    if not has_tokens(data):
        raise AccountSourceError(f"{where}: no accessToken or refreshToken")
    try:
        return auth_method_of(data)
    except GatewayError as exc:
        raise AccountSourceError(f"{where}: {exc.message}") from None


def load_token_json(path: Path) -> dict[str, Any]:
    """A token file's JSON, with an IdC login's client id/secret merged in from its companion
    registration file when one is found."""
    try:
        data = dict(read_token_file(path).data)
    except TokenFileError as exc:
        raise AccountSourceError(str(exc)) from None
    if login_method(data, where=str(path)) == "idc":
        registration = find_client_registration(path, data)
        if registration is not None:
            data["clientId"] = registration.client_id
            data["clientSecret"] = registration.client_secret
    return data


def safe_id(raw: str) -> str:
    """`raw` as an account id: lower case, only [a-z0-9_-], at most 40 characters."""
    text = _UNSAFE.sub("-", raw.lower()).strip("-")
    return text[:MAX_ID_CHARS].rstrip("-") or "account"


def _unique(base: str, taken: set[str]) -> str:
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        tail = f"-{n}"
        candidate = base[: MAX_ID_CHARS - len(tail)].rstrip("-") + tail
    taken.add(candidate)
    return candidate


def _suggested_name(root: Path, path: Path) -> str:
    relative = path.relative_to(root).parts
    if path.name == TOKEN_FILE_NAME and len(relative) >= 2:
        return relative[0]
    return path.stem


def _is_token_file(path: Path) -> bool:
    try:
        return path.is_file() and has_tokens(read_token_file(path).data)
    except TokenFileError:
        return False


def scan_token_dir(root: Path) -> list[tuple[str, Path]]:
    """Every token file under `root` (recursive, sorted) with a suggested unique id: the first
    directory under `root` for `root/NAME/.../kiro-auth-token.json`, else the file stem.
    Registration files (no tokens), unreadable files and hidden files are skipped."""
    if not root.is_dir():
        raise AccountSourceError(f"{root} is not a directory")
    try:
        paths = sorted(root.rglob("*.json"))
    except OSError as exc:
        raise AccountSourceError(
            f"cannot list {root}: {exc.strerror or type(exc).__name__}"
        ) from None
    taken: set[str] = set()
    found: list[tuple[str, Path]] = []
    for path in paths:
        if path.name.startswith(".") or not _is_token_file(path):
            continue
        found.append((_unique(safe_id(_suggested_name(root, path)), taken), path))
    return found


# kiro-cli ---------------------------------------------------------------------------------------


def default_kiro_cli_db(home: Path) -> Path:
    """Where kiro-cli keeps its database: the Linux path, or the macOS one when only it exists."""
    linux = home / ".local" / "share" / "kiro-cli" / "data.sqlite3"
    mac = home / "Library" / "Application Support" / "kiro-cli" / "data.sqlite3"
    return mac if mac.is_file() and not linux.is_file() else linux


def _json_value(raw: object) -> Any:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if not isinstance(raw, str):
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw  # a bare string value (e.g. a profile arn stored unquoted)


def _read_table(conn: sqlite3.Connection, table: str) -> dict[str, Any]:
    rows = conn.execute(f"SELECT key, value FROM {table}").fetchall()  # table names are ours
    return {str(key): _json_value(value) for key, value in rows}


def _expires_iso(value: object) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        seconds = value / 1000 if value > 1e11 else value
        return format_expires_at(datetime.fromtimestamp(seconds, UTC))
    parsed = parse_expires_at(value)
    return format_expires_at(parsed[0]) if parsed else None


def _profile_arn(state: Mapping[str, Any]) -> str | None:
    value = state.get(_PROFILE_KEY)
    if isinstance(value, Mapping):
        value = value.get("arn") or value.get("profileArn") or value.get("profile_arn")
    return value if isinstance(value, str) and value.startswith("arn:") else None


def _str(obj: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = obj.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _token_json(
    raw: Mapping[str, Any], method: str, registration: Mapping[str, Any], profile: str | None
) -> dict[str, Any]:
    out: dict[str, Any] = {"authMethod": method}
    for ours, names in (
        ("accessToken", ("access_token", "accessToken")),
        ("refreshToken", ("refresh_token", "refreshToken")),
        ("profileArn", ("profile_arn", "profileArn")),
    ):
        value = _str(raw, *names)
        if value is not None:
            out[ours] = value
    expires = _expires_iso(raw.get("expires_at", raw.get("expiresAt")))
    if expires is not None:
        out["expiresAt"] = expires
    region = _str(raw, "region") or (_str(registration, "region") if method == "IdC" else None)
    if region is not None:
        out["region"] = region
    if profile is not None and "profileArn" not in out:
        out["profileArn"] = profile
    if method == "IdC":
        for ours, theirs in (("clientId", "client_id"), ("clientSecret", "client_secret")):
            value = _str(registration, theirs, ours)
            if value is not None:
                out[ours] = value
    return out


def _open_read_only(db: Path) -> sqlite3.Connection:
    if not db.is_file():
        raise AccountSourceError(f"no kiro-cli database at {db}")
    try:
        return sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise AccountSourceError(f"cannot open the kiro-cli database {db}: {exc}") from None


def _tables(conn: sqlite3.Connection, db: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if "auth_kv" not in names:
            raise AccountSourceError(f"{db} has no auth_kv table (is it kiro-cli's database?)")
        state = _read_table(conn, "state") if "state" in names else {}
        return _read_table(conn, "auth_kv"), state
    except sqlite3.Error as exc:
        raise AccountSourceError(f"cannot read the kiro-cli database {db}: {exc}") from None


def read_kiro_cli_db(db: Path, notes: list[str] | None = None) -> list[dict[str, Any]]:
    """The logins kept by kiro-cli in `db` (opened read-only), as token-file JSON, one per
    distinct refresh token. Unsupported entries are skipped; why is appended to `notes`."""
    conn = _open_read_only(db)
    try:
        auth, state = _tables(conn, db)
    finally:
        conn.close()
    if _EXTERNAL_IDP_KEY in auth and notes is not None:
        notes.append(
            f"skipped {_EXTERNAL_IDP_KEY}: external identity provider logins are not supported"
        )
    registration: Mapping[str, Any] = next(
        (auth[k] for k in KIRO_CLI_REGISTRATION_KEYS if isinstance(auth.get(k), Mapping)), {}
    )
    profile = _profile_arn(state)
    found: list[dict[str, Any]] = []
    seen: set[str] = set()
    for key, method in KIRO_CLI_TOKEN_KEYS:
        raw = auth.get(key)
        if not isinstance(raw, Mapping):
            continue
        token = _token_json(raw, method, registration, profile)
        marker = token.get("refreshToken") or token.get("accessToken")
        if not has_tokens(token) or marker in seen:
            continue
        seen.add(str(marker))
        if method == "IdC" and "clientId" not in token and notes is not None:
            notes.append(f"{key}: no device registration found; refreshing it will fail")
        found.append(token)
    return found
