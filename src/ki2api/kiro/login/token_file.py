"""The Kiro token file on disk: `expiresAt` formats, reading, companion lookup, atomic write-back.

`kiro-auth-token.json` (docs/kiro-protocol.md §1.1) is written by the Kiro IDE with a JavaScript
`toISOString()` timestamp; other tools write `+00:00` offsets, RFC 3339 with or without a
fraction, micro- or nanoseconds. We parse all of them and write back in the style we found, so
the IDE and every other tool sharing the file keep working.

Writes are atomic: a temp file in the same directory, fsync, `os.replace`, mode 0600. Nothing in
this module logs or raises a token.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "JS_ISO_MS",
    "ClientRegistration",
    "ExpiryFormat",
    "TokenFile",
    "TokenFileError",
    "file_mtime_ns",
    "find_client_registration",
    "format_expires_at",
    "parse_expires_at",
    "read_token_file",
    "write_token_file",
]

_ISO_RE = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})"
    r"(?:[.,](?P<frac>\d{1,12}))?"
    r"(?P<tz>[Zz]|[+-]\d{2}:?\d{2})?"
)
_HASH_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_MAX_FILE_BYTES = 1024 * 1024


class TokenFileError(Exception):
    """A token file could not be read or parsed; the message names the path, never content."""


@dataclass(frozen=True)
class ExpiryFormat:
    """How a file spells `expiresAt`: digits after the seconds, and the zone suffix as written."""

    frac_digits: int
    suffix: str  # "Z", "+00:00", "+0800", or "" (no zone: read and written as UTC)


JS_ISO_MS = ExpiryFormat(3, "Z")  # what the Kiro IDE writes: 2025-12-05T07:54:17.089Z


def _suffix_zone(suffix: str) -> timezone:
    if suffix in ("", "Z", "z"):
        return UTC
    sign = -1 if suffix[0] == "-" else 1
    digits = suffix[1:].replace(":", "")
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))


def parse_expires_at(value: object) -> tuple[datetime, ExpiryFormat] | None:
    """Parse an `expiresAt` string into an aware datetime and the format it was written in."""
    if not isinstance(value, str):
        return None
    match = _ISO_RE.fullmatch(value.strip())
    if match is None:
        return None
    frac = match["frac"] or ""
    suffix = match["tz"] or ""
    try:
        base = datetime.fromisoformat(f"{match['date']}T{match['time']}")
        zone = _suffix_zone(suffix)
    except ValueError:
        return None
    micros = int((frac + "000000")[:6])
    when = base.replace(microsecond=micros, tzinfo=zone).astimezone(UTC)
    return when, ExpiryFormat(len(frac), suffix)


def format_expires_at(when: datetime, fmt: ExpiryFormat = JS_ISO_MS) -> str:
    """Write `when` in format `fmt` (fractions beyond microseconds are zero-padded)."""
    local = when.astimezone(_suffix_zone(fmt.suffix))
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if fmt.frac_digits:
        micros = f"{local.microsecond:06d}"
        text += "." + micros[: fmt.frac_digits].ljust(fmt.frac_digits, "0")
    return text + fmt.suffix


@dataclass(frozen=True)
class TokenFile:
    """One read of a token file: its JSON object (every key kept), mtime and layout."""

    path: Path
    data: Mapping[str, Any] = field(repr=False)
    mtime_ns: int
    indent: int | None = 2
    trailing_newline: bool = False


def _layout(text: str) -> tuple[int | None, bool]:
    body = text.strip()
    lines = body.splitlines()
    if len(lines) < 2:
        return None, text.endswith("\n")
    second = lines[1]
    indent = len(second) - len(second.lstrip(" "))
    return (indent or 2), text.endswith("\n")


def _load_object(path: Path) -> tuple[dict[str, Any], str]:
    try:
        raw = path.read_bytes()[:_MAX_FILE_BYTES]
        text = raw.decode("utf-8-sig")
        data = json.loads(text)
    except OSError as exc:
        raise TokenFileError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    except ValueError:
        raise TokenFileError(f"{path} is not valid JSON") from None
    if not isinstance(data, dict):
        raise TokenFileError(f"{path} does not hold a JSON object")
    return data, text


def read_token_file(path: Path) -> TokenFile:
    """Read a token file; raises `TokenFileError` when it is missing, unreadable or not JSON."""
    try:
        mtime_ns = path.stat().st_mtime_ns
    except OSError as exc:
        raise TokenFileError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    data, text = _load_object(path)
    indent, trailing = _layout(text)
    return TokenFile(path, data, mtime_ns, indent, trailing)


def file_mtime_ns(path: Path) -> int | None:
    """The file's mtime in ns, or None when it cannot be stat'ed."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


@dataclass(frozen=True)
class ClientRegistration:
    """An IdC client registration (`{clientIdHash}.json`): what SSO-OIDC CreateToken needs."""

    client_id: str = field(repr=False)
    client_secret: str = field(repr=False)
    source: Path | None = None


def _registration_from(data: Mapping[str, Any], source: Path | None) -> ClientRegistration | None:
    client_id, secret = data.get("clientId"), data.get("clientSecret")
    if isinstance(client_id, str) and client_id and isinstance(secret, str) and secret:
        return ClientRegistration(client_id, secret, source)
    return None


def _registration_at(path: Path) -> ClientRegistration | None:
    try:
        data, _ = _load_object(path)
    except TokenFileError:
        return None
    return _registration_from(data, path)


def find_client_registration(
    token_path: Path, data: Mapping[str, Any]
) -> ClientRegistration | None:
    """The IdC client id/secret: inline in the token file, else `{clientIdHash}.json` next to
    it, else the first other `*.json` in that directory holding `clientId` and `clientSecret`."""
    inline = _registration_from(data, token_path)
    if inline is not None:
        return inline
    directory = token_path.parent
    named: Path | None = None
    client_id_hash = data.get("clientIdHash")
    if isinstance(client_id_hash, str) and _HASH_RE.fullmatch(client_id_hash):
        named = directory / f"{client_id_hash}.json"
        found = _registration_at(named)
        if found is not None:
            return found
    try:
        candidates = sorted(directory.glob("*.json"))
    except OSError:
        return None
    for candidate in candidates:
        if candidate in (token_path, named):
            continue
        found = _registration_at(candidate)
        if found is not None:
            return found
    return None


def _serialise(data: Mapping[str, Any], indent: int | None, trailing_newline: bool) -> bytes:
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    return (text + ("\n" if trailing_newline else "")).encode("utf-8")


def _keep_owner(fd: int, target: Path) -> None:
    """When root rewrites a user's file (Docker), give the new file the old owner back."""
    try:
        st = target.stat()
        if sys.platform != "win32" and os.geteuid() == 0:
            os.fchown(fd, st.st_uid, st.st_gid)
    except OSError:
        pass


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_token_file(
    path: Path, data: Mapping[str, Any], *, indent: int | None = 2, trailing_newline: bool = False
) -> int | None:
    """Replace `path` atomically with `data` (mode 0600); returns the new mtime_ns.

    Raises `OSError` (e.g. `PermissionError`, read-only file system) and leaves the old file
    untouched; the temp file is removed on failure.
    """
    target = Path(os.path.realpath(path))
    payload = _serialise(data, indent, trailing_newline)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            if sys.platform != "win32":  # no fchmod there (Python < 3.13); 0600 means little
                os.fchmod(handle.fileno(), 0o600)
            _keep_owner(handle.fileno(), target)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    _fsync_dir(target.parent)
    return file_mtime_ns(target)
