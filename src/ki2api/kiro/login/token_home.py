"""Where one account's tokens live between refreshes: its token file, the state store, or memory.

`KiroCredentials` reads newer tokens from its home before refreshing (another process may have
refreshed them: the Kiro IDE writing the token file, or another gateway worker) and saves what it
refreshed back there. Three homes:

* `FileTokenHome`: a `kiro-auth-token.json` shared with the Kiro IDE (atomic write-back);
* `StoreTokenHome`: tokens kept in the state store (accounts added with `ki2api accounts add`,
  and logins from the environment, so a rotated refresh token survives a restart); saves are
  compare-and-set on the stored version;
* `MemoryTokenHome`: nothing persistent (a login given in the environment without a store).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ki2api.kiro.login.discovery import auth_method_of, token_region
from ki2api.kiro.login.file_store import TokenFileStore, TokenSet
from ki2api.kiro.login.token_file import (
    ClientRegistration,
    format_expires_at,
    parse_expires_at,
)
from ki2api.state.base import StateStore

__all__ = ["FileTokenHome", "MemoryTokenHome", "StoreTokenHome", "TokenHome", "seed_fingerprint"]

_log = logging.getLogger(__name__)


class TokenHome(Protocol):
    @property
    def loaded(self) -> bool: ...
    @property
    def auth_method(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def read_only(self) -> bool: ...
    @property
    def path(self) -> Path | None: ...

    async def load_changed(self) -> TokenSet | None:
        """The tokens if never read, or changed since the last load/save; else None."""

    async def save(self, tokens: TokenSet) -> None: ...

    def client_registration(self) -> ClientRegistration | None: ...


class FileTokenHome:
    """A token file (see `credentials_store.TokenFileStore`)."""

    def __init__(self, store: TokenFileStore) -> None:
        self._file = store

    @property
    def loaded(self) -> bool:
        return self._file.loaded

    @property
    def auth_method(self) -> str:
        return self._file.auth_method

    @property
    def region(self) -> str:
        return self._file.region

    @property
    def read_only(self) -> bool:
        return self._file.read_only

    @property
    def path(self) -> Path | None:
        return self._file.path

    async def load_changed(self) -> TokenSet | None:
        return self._file.changed_tokens()

    async def save(self, tokens: TokenSet) -> None:
        await self._file.save(tokens)

    def client_registration(self) -> ClientRegistration | None:
        return self._file.client_registration()


class MemoryTokenHome:
    """Tokens given at start-up (the environment); refreshed ones live in memory only."""

    def __init__(self, tokens: TokenSet) -> None:
        self._tokens: TokenSet | None = tokens
        self.loaded = False
        self.auth_method = "social"
        self.read_only = False
        self.path: Path | None = None
        self.region = "us-east-1"

    async def load_changed(self) -> TokenSet | None:
        tokens, self._tokens = self._tokens, None
        self.loaded = True
        return tokens

    async def save(self, tokens: TokenSet) -> None:
        return None

    def client_registration(self) -> ClientRegistration | None:
        return None


def seed_fingerprint(tokens: TokenSet) -> str:
    """Identifies the login a seed came from without storing anything derived reversibly."""
    raw = f"{tokens.refresh_token or ''}\n{tokens.access_token or ''}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _token_set(data: Mapping[str, Any]) -> TokenSet:
    parsed = parse_expires_at(data.get("expiresAt"))
    return TokenSet(
        access_token=_text(data.get("accessToken")),
        refresh_token=_text(data.get("refreshToken")),
        profile_arn=_text(data.get("profileArn")),
        expires_at=parsed[0] if parsed else None,
    )


class StoreTokenHome:
    """Tokens kept in the state store under one account id.

    `seed`: tokens from the environment. They are stored the first time, and again whenever
    they change (a new login in the environment replaces what the store remembered); otherwise
    the stored, possibly refreshed and rotated, tokens win.
    """

    def __init__(
        self,
        store: StateStore,
        account_id: str,
        *,
        default_region: str,
        seed: TokenSet | None = None,
    ) -> None:
        self._store = store
        self._id = account_id
        self._default_region = default_region
        self._seed = seed
        self._data: dict[str, Any] | None = None
        self._version: int | None = None
        self.read_only = False
        self.path: Path | None = None

    @property
    def loaded(self) -> bool:
        return self._data is not None

    @property
    def auth_method(self) -> str:
        return auth_method_of(self._data or {})

    @property
    def region(self) -> str:
        return token_region(self._data or {}, self._default_region)

    async def load_changed(self) -> TokenSet | None:
        stored = await self._store.load_tokens(self._id)
        if self._seed is not None:
            stored = await self._apply_seed(stored)
        if stored is None:
            if self._data is None:
                self._data = {}
                return TokenSet()
            return None
        if stored.version == self._version:
            return None
        self._data, self._version = dict(stored.data), stored.version
        return _token_set(self._data)

    async def _apply_seed(self, stored: Any) -> Any:
        seed, self._seed = self._seed, None
        assert seed is not None
        mark = seed_fingerprint(seed)
        if stored is not None and stored.data.get("seedFingerprint") == mark:
            return stored
        data: dict[str, Any] = {"authMethod": "social", "seedFingerprint": mark}
        if seed.access_token:
            data["accessToken"] = seed.access_token
        if seed.refresh_token:
            data["refreshToken"] = seed.refresh_token
        expected = stored.version if stored is not None else None
        await self._store.save_tokens(self._id, data, expected_version=expected)
        return await self._store.load_tokens(self._id)

    async def save(self, tokens: TokenSet) -> None:
        data = dict(self._data or {})
        data["accessToken"] = tokens.access_token
        if tokens.refresh_token:
            data["refreshToken"] = tokens.refresh_token
        if tokens.profile_arn:
            data["profileArn"] = tokens.profile_arn
        if tokens.expires_at is not None:
            data["expiresAt"] = format_expires_at(tokens.expires_at)
        version = await self._store.save_tokens(self._id, data, expected_version=self._version)
        if version is None:
            _log.warning(
                "account %s: its stored tokens changed while refreshing; keeping the stored ones",
                self._id,
            )
            return
        self._data, self._version = data, version

    def client_registration(self) -> ClientRegistration | None:
        data = self._data or {}
        client_id, secret = _text(data.get("clientId")), _text(data.get("clientSecret"))
        if client_id is None or secret is None:
            return None
        return ClientRegistration(client_id=client_id, client_secret=secret)
