"""A Kiro API key as one account's login: sent as it is, never refreshed.

A Kiro API key (`ksk_…`, docs/kiro-protocol.md §1.4) is the bearer token itself, sent with the
header `tokentype: API_KEY` (`kiro/endpoint.py` adds it to every call of the account); there is
no refresh and no token exchange. So when Kiro answers "bearer token invalid" for one, the key
was revoked or has expired: `ApiKeyCredentials.refresh` raises that as the account's login
failure (code `api_key_revoked`, which disables the account: `kiro/accounts/policy.py`), unless
the store meanwhile holds another key for the account (it was replaced), which is used instead.

The key comes from `KIRO_API_KEY` (an account from the environment) or from the state store
(`ki2api accounts add-key`: `{"authMethod": "api_key", "apiKey", "region"}`). A profile ARN is
sent only when one is known (`KIRO_PROFILE_ARN`, or `profileArn` stored with the key): none is
known to be needed on the Q host (docs/kiro-protocol.md §1.3), and none is ever invented.
Nothing here logs or shows a key except masked (`mask_key`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.kiro.endpoint import API_KEY_PREFIX
from ki2api.kiro.login.credentials import AuthSnapshot, CredentialSource, KiroCredentials
from ki2api.kiro.login.file_store import TokenSet
from ki2api.kiro.login.token_home import MemoryTokenHome
from ki2api.settings import Settings
from ki2api.state.base import StateStore

__all__ = [
    "API_KEY_METHOD",
    "API_KEY_REVOKED",
    "ApiKeyCredentials",
    "check_key",
    "mask_key",
    "stored_key_data",
]

API_KEY_METHOD = "api_key"  # the auth_method of such accounts (`accounts list`: "api key")
API_KEY_REVOKED = "api_key_revoked"  # the code of a refused key: the account is disabled
_KEY_RE = re.compile(r"ksk_[A-Za-z0-9._~+/=-]{4,1000}")


def mask_key(key: str) -> str:
    """`ksk_…abcd`: enough to tell keys apart, never enough to use one."""
    tail = key[-4:] if len(key) >= len(API_KEY_PREFIX) + 12 else ""
    return f"{API_KEY_PREFIX}…{tail}"


def check_key(raw: str) -> str:
    """The key, stripped; ValueError (never quoting the key) when it is not a Kiro API key."""
    key = raw.strip()
    if not key:
        raise ValueError("no API key given")
    if not key.startswith(API_KEY_PREFIX):
        raise ValueError(f"a Kiro API key starts with {API_KEY_PREFIX!r}; this one does not")
    if not _KEY_RE.fullmatch(key):
        raise ValueError("the API key holds characters a Kiro API key does not (or is too short)")
    return key


def stored_key_data(key: str, region: str, profile_arn: str | None = None) -> dict[str, Any]:
    """What the store keeps for an API-key account (its "tokens")."""
    data: dict[str, Any] = {"authMethod": API_KEY_METHOD, "apiKey": key, "region": region}
    if profile_arn:
        data["profileArn"] = profile_arn
    return data


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class ApiKeyCredentials(KiroCredentials):
    """One API-key account's login (see the module docstring). `key`: from the environment;
    else it is read from `store` under `account_id`."""

    def __init__(
        self,
        settings: Settings,
        http: httpx.AsyncClient | Callable[[], httpx.AsyncClient],
        *,
        account_id: str,
        label: str,
        machine_id: str | None,
        key: str | None = None,
        store: StateStore | None = None,
    ) -> None:
        super().__init__(
            CredentialSource("api_key", None, label),
            settings,
            http,
            account_id=account_id,
            home=MemoryTokenHome(TokenSet()),
            machine_id=machine_id,
        )
        self._key = key
        self._store = store
        self._region = (settings.kiro_api_region or "").strip() or "us-east-1"
        self._arn: str | None = None
        self._problem: str | None = None
        self._refused: GatewayError | None = None

    def __repr__(self) -> str:
        return f"ApiKeyCredentials(account_id={self.account_id!r})"

    @property
    def login_region(self) -> str | None:
        return self._region

    async def _read(self) -> str:
        """The key now (the store's may have been replaced since the last read)."""
        if self._store is not None:
            stored = await self._store.load_tokens(self.account_id)
            data = stored.data if stored is not None else {}
            key = _text(data.get("apiKey"))
            if key is None:
                self._problem = "no API key is stored for this account"
                raise GatewayError(
                    ErrorKind.NO_CREDENTIALS,
                    f"account {self.account_id}: no API key is stored for it; add one with "
                    "`ki2api accounts add-key`.",
                )
            self._region = _text(data.get("region")) or self._region
            self._arn = _text(data.get("profileArn"))
            self._key = key
        if not self._key:
            raise GatewayError(ErrorKind.NO_CREDENTIALS, "no Kiro API key")
        self._problem = None
        return self._key

    def _auth(self, key: str) -> AuthSnapshot:
        return AuthSnapshot(
            self.account_id,
            key,
            self._settings.kiro_profile_arn or self._arn,
            API_KEY_METHOD,
            None,  # an API key states no expiry: it works until Kiro refuses it
            self._machine_id,
            self._region,
        )

    async def current(self) -> AuthSnapshot:
        key = self._key if self._key is not None else await self._read()
        return self._auth(key)

    async def refresh(self, *, stale: str | None = None) -> AuthSnapshot:
        """Never a refresh: Kiro refused the key. A replaced key (in the store) is used; else
        the key was revoked or expired, which is this account's login failure."""
        key = await self._read()
        if stale is None:  # asked for a refresh (`accounts refresh`), not refused by Kiro
            raise GatewayError(
                ErrorKind.INVALID_REQUEST,
                f"account {self.account_id} is a Kiro API key ({mask_key(key)}): API keys are "
                "never refreshed; it works until it is revoked or expires.",
            )
        if key != stale:
            self._refused = None
            return self._auth(key)
        self._refused = GatewayError(
            ErrorKind.UPSTREAM_AUTH,
            f"Kiro refused the API key {mask_key(key)} (bearer token invalid): the key was "
            "revoked or has expired. Create a new key in Kiro and add it with `ki2api accounts "
            "add-key` (or set KIRO_API_KEY).",
            upstream_status=403,
            code=API_KEY_REVOKED,
        )
        raise self._refused

    async def load(self) -> None:
        try:
            await self.current()
        except GatewayError:
            pass

    def status(self) -> dict[str, object]:
        """Health/doctor view: the key masked, never the key."""
        key = self._key
        refused = self._refused
        return {
            "account_id": self.account_id,
            "source": self._source.description,
            "source_kind": "api_key",
            "path": None,
            "auth_method": API_KEY_METHOD,
            "api_key": mask_key(key) if key else None,
            "has_access_token": key is not None,
            "has_refresh_token": False,
            "profile_arn": self._settings.kiro_profile_arn or self._arn,
            "expires_at": None,
            "seconds_left": None,
            "refresh_count": 0,
            "refresh_failures": 0,
            "last_refresh_ok": None,
            "last_refresh_at": None,
            "last_error": refused.message if refused else self._problem,
            "read_only": True,
        }
