"""The token file behind one account: re-read when it changed on disk, atomic write-back.

`TokenFileStore` remembers the last version it read or wrote (mtime, every key, the `expiresAt`
style, the JSON layout) so a write-back keeps whatever else the Kiro IDE stores there. A file
that cannot be written (read-only mount) leaves the tokens in memory and is reported by one
warning per store, not one per refresh.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.kiro.login.discovery import auth_method_of, token_region
from ki2api.kiro.login.token_file import (
    JS_ISO_MS,
    ClientRegistration,
    TokenFile,
    TokenFileError,
    file_mtime_ns,
    find_client_registration,
    format_expires_at,
    parse_expires_at,
    read_token_file,
    write_token_file,
)

__all__ = ["TokenFileStore", "TokenSet"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenSet:
    """The tokens of one login; the secrets never appear in a repr."""

    access_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    profile_arn: str | None = None
    expires_at: datetime | None = None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class TokenFileStore:
    """Reads and atomically rewrites one `kiro-auth-token.json`."""

    def __init__(self, path: Path, *, default_region: str, account_id: str = "default") -> None:
        self.path = path
        self.auth_method = "social"
        self.region = default_region
        self.read_only = False
        self._default_region = default_region
        self._account_id = account_id
        self._file: TokenFile | None = None
        self._format = JS_ISO_MS
        self._warned = False

    @property
    def loaded(self) -> bool:
        return self._file is not None

    def changed_tokens(self) -> TokenSet | None:
        """The file's tokens if it was never read or changed on disk since; else None.

        The first read raises NO_CREDENTIALS when the file is unusable; later unreadable
        versions are skipped with a warning (memory keeps working tokens).
        """
        if self._file is not None and file_mtime_ns(self.path) in (None, self._file.mtime_ns):
            return None
        try:
            disk = read_token_file(self.path)
        except TokenFileError as exc:
            if self._file is None:
                raise GatewayError(
                    ErrorKind.NO_CREDENTIALS, f"The Kiro token file is unusable: {exc}."
                ) from None
            _log.warning("account %s: ignoring the token file: %s", self._account_id, exc)
            return None
        self.auth_method = auth_method_of(disk.data)
        self.region = token_region(disk.data, self._default_region)
        self._file = disk
        parsed = parse_expires_at(disk.data.get("expiresAt"))
        if parsed is not None:
            self._format = parsed[1]
        return TokenSet(
            access_token=_text(disk.data.get("accessToken")),
            refresh_token=_text(disk.data.get("refreshToken")),
            profile_arn=_text(disk.data.get("profileArn")),
            expires_at=parsed[0] if parsed else None,
        )

    def client_registration(self) -> ClientRegistration | None:
        """The IdC client id/secret for this file (inline, companion, or scanned)."""
        if self._file is None:
            return None
        return find_client_registration(self.path, self._file.data)

    async def save(self, tokens: TokenSet) -> None:
        """Write `tokens` back atomically, keeping every other key and the `expiresAt` style."""
        disk = self._file
        if disk is None:
            return
        data = dict(disk.data)
        data["accessToken"] = tokens.access_token
        if tokens.refresh_token:
            data["refreshToken"] = tokens.refresh_token
        if tokens.expires_at is not None:
            data["expiresAt"] = format_expires_at(tokens.expires_at, self._format)
        if tokens.profile_arn:
            data["profileArn"] = tokens.profile_arn
        try:
            mtime = await asyncio.to_thread(
                write_token_file,
                self.path,
                data,
                indent=disk.indent,
                trailing_newline=disk.trailing_newline,
            )
        except OSError as exc:
            self._note_read_only(exc)
            return
        self.read_only = False
        self._file = TokenFile(self.path, data, mtime or 0, disk.indent, disk.trailing_newline)

    def _note_read_only(self, exc: OSError) -> None:
        self.read_only = True
        if self._warned:
            return
        self._warned = True
        _log.warning(
            "account %s: cannot save the refreshed Kiro token to %s (%s); keeping it in memory "
            "only. If the refresh token rotated, a restart will need a new Kiro login.",
            self._account_id,
            self.path,
            exc.strerror or type(exc).__name__,
        )
