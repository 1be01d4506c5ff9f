"""How the pool makes each account's login object, and a one-off refresh for the CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.http_client import create_upstream_client
from ki2api.kiro.accounts.proxies import NetworkRoutes
from ki2api.kiro.login.api_key import API_KEY_METHOD, ApiKeyCredentials
from ki2api.kiro.login.credentials import CredentialSource, KiroCredentials
from ki2api.kiro.login.file_store import TokenSet
from ki2api.kiro.login.token_home import StoreTokenHome, TokenHome
from ki2api.settings import Settings
from ki2api.state.base import FILE_SOURCES, AccountRecord, StateStore

__all__ = ["credentials_factory", "refresh_account"]


def credentials_factory(
    settings: Settings,
    http: httpx.AsyncClient,
    store: StateStore,
    routes: NetworkRoutes | None = None,
) -> Callable[[AccountRecord], KiroCredentials]:
    """The login object of an account, by where its tokens live: its token file ("file"), or
    the store ("store"; "env", seeded from KIRO_ACCESS_TOKEN / KIRO_REFRESH_TOKEN); an API-key
    account's key (KIRO_API_KEY, or the store's), never refreshed. With
    `routes`, its refresh and profile calls go through the account's network path."""

    def client_of(record: AccountRecord) -> httpx.AsyncClient | Callable[[], httpx.AsyncClient]:
        if routes is None:
            return http
        return lambda: routes.http_for(record.id)

    def make(record: AccountRecord) -> KiroCredentials:
        if record.auth_method == API_KEY_METHOD:  # never refreshed (kiro/login/api_key.py)
            env = record.source == "env"
            return ApiKeyCredentials(
                settings,
                client_of(record),
                account_id=record.id,
                label=record.label,
                machine_id=record.machine_id,
                key=settings.kiro_api_key if env else None,
                store=None if env else store,
            )
        home: TokenHome | None = None
        if record.source in FILE_SOURCES and record.path:
            source = CredentialSource("file", Path(record.path), record.label)
        else:
            seed = None
            if record.source == "env":
                seed = TokenSet(settings.kiro_access_token, settings.kiro_refresh_token)
            source = CredentialSource(record.source, None, record.label)
            home = StoreTokenHome(
                store, record.id, default_region=settings.kiro_region or "us-east-1", seed=seed
            )
        return KiroCredentials(
            source,
            settings,
            client_of(record),
            account_id=record.id,
            home=home,
            locks=store,  # one refresh per account among all workers
            machine_id=record.machine_id,
        )

    return make


async def refresh_account(settings: Settings, store: StateStore, account_id: str) -> str:
    """Refresh one account's token now (under the same lock a running gateway uses)."""
    record = await store.get_account(account_id)
    if record is None:
        raise GatewayError(ErrorKind.NOT_FOUND, f"no account {account_id!r}")
    async with create_upstream_client(settings) as http:
        routes = NetworkRoutes(settings, http)
        routes.update(await store.list_accounts())
        try:
            credentials = credentials_factory(settings, http, store, routes)(record)
            auth = await credentials.refresh()
        finally:
            await routes.aclose()
    until = auth.expires_at.isoformat(timespec="seconds") if auth.expires_at else "unknown"
    return f"account {account_id}: token refreshed (valid until {until})"
