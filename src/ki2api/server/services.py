"""Services: the objects a running gateway is made of, built once per app in the lifespan."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.models import ModelCatalogue, default_catalogue
from ki2api.http_client import create_upstream_client, proxy_tls
from ki2api.images.fetch import ImageFetcher
from ki2api.kiro.accounts.catalogue import LiveCatalogue, live_catalogue
from ki2api.kiro.accounts.logins import credentials_factory
from ki2api.kiro.accounts.policy import PolicyConfig
from ki2api.kiro.accounts.pool import AccountPool
from ki2api.kiro.accounts.proxies import NetworkRoutes
from ki2api.kiro.accounts.registry import sync_discovered
from ki2api.kiro.accounts.slots import SlotConfig, SlotGate
from ki2api.kiro.accounts.upkeep import QuotaPoller, quota_lookup, retry_revoked_logins
from ki2api.kiro.backend import BackendOptions, KiroBackend
from ki2api.kiro.endpoint import identity_for, set_identity
from ki2api.kiro.login.discovery import discover, no_credentials_error
from ki2api.kiro.mcp import KiroWebSearch
from ki2api.kiro.transport import AiohttpChatTransport, ChatTransport
from ki2api.settings import Settings
from ki2api.state.base import StateStore
from ki2api.state.open_store import open_gateway_store
from ki2api.state.usage_log import UsageLog

__all__ = ["Services", "build_services"]

log = logging.getLogger("ki2api")


@dataclass
class Services:
    settings: Settings
    http: httpx.AsyncClient
    catalogue: ModelCatalogue
    store: StateStore
    pool: AccountPool
    backend: KiroBackend
    chat: ChatTransport
    usage: UsageLog
    web_search: KiroWebSearch
    quota: QuotaPoller
    credentials_problem: str | None = None
    images: ImageFetcher | None = None
    live: LiveCatalogue | None = None  # what the accounts really offer (ListAvailableModels)
    routes: NetworkRoutes | None = None  # each account's network path (its outbound proxy)

    async def models(self) -> ModelCatalogue:
        """The catalogue requests resolve against: the accounts' live one, else the static."""
        return await self.live.catalogue() if self.live is not None else self.catalogue

    def require_web_search(self) -> KiroWebSearch:
        self._require_accounts()
        return self.web_search

    def require_backend(self) -> KiroBackend:
        self._require_accounts()
        return self.backend

    def _require_accounts(self) -> None:
        if len(self.pool) == 0:
            raise GatewayError(
                ErrorKind.NO_CREDENTIALS,
                self.credentials_problem or "No Kiro login is configured.",
            )

    async def aclose(self) -> None:
        try:
            await self.quota.aclose()
            await self.pool.slots.aclose()
            await self.usage.aclose()
        finally:
            await self.chat.aclose()
            if self.routes is not None:
                await self.routes.aclose()
            await self.http.aclose()
            await self.store.aclose()


def policy_config(settings: Settings) -> PolicyConfig:
    return PolicyConfig(
        throttle_base_s=settings.throttle_cooldown_s,
        error_base_s=settings.error_cooldown_s,
        suspicious_rest_s=settings.suspicious_rest_s,
        credit_window_s=settings.credit_window_s,
        user_rate_rest_s=settings.user_rate_rest_s,
    )


async def build_services(
    settings: Settings,
    *,
    upstream_transport: httpx.AsyncBaseTransport | None = None,
    chat_transport: ChatTransport | None = None,
) -> Services:
    """`upstream_transport`: under the httpx client (refresh, models, quota); `chat_transport`:
    the chat and web-search calls (an aiohttp session when None). Both are test seams."""
    set_identity(identity_for(settings))  # the user agent of every Kiro call
    http = create_upstream_client(settings, upstream_transport)
    catalogue = default_catalogue(family_fallback=settings.model_fallback).with_overrides(
        settings.model_overrides
    )
    store = open_gateway_store(settings)
    routes = NetworkRoutes(settings, http)
    pool, problem = await _account_pool(settings, http, store, routes)
    chat = chat_transport
    if chat is None:
        chat = AiohttpChatTransport(
            max_connections=settings.max_connections,
            connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            proxy_tls=proxy_tls(settings),  # KI2API_PROXY_CA_FILE: checked here, at start
        )
    backend = _backend(settings, chat, pool)
    web_search = KiroWebSearch(
        chat,
        pool,
        api_base=settings.kiro_api_base,
        profile_arn=settings.kiro_profile_arn,
        region=settings.kiro_region,
    )
    usage = UsageLog(store)
    usage.start()
    quota = QuotaPoller(settings, store, pool, http, routes)
    quota.start()
    return Services(
        settings,
        http,
        catalogue,
        store,
        pool,
        backend,
        chat,
        usage,
        web_search,
        quota,
        credentials_problem=problem,
        images=_image_fetcher(settings),
        live=live_catalogue(settings, http, pool, catalogue, routes),
        routes=routes,
    )


async def _account_pool(
    settings: Settings, http: httpx.AsyncClient, store: StateStore, routes: NetworkRoutes
) -> tuple[AccountPool, str | None]:
    """The loaded pool of Kiro logins, and why it is empty (None when it is not)."""
    problem: str | None = None
    try:
        await sync_discovered(settings, store)
    except GatewayError as exc:
        problem = exc.message
    await retry_revoked_logins(store)
    pool = AccountPool(
        store,
        credentials_factory(settings, http, store, routes),
        policy=policy_config(settings),
        quota_lookup=quota_lookup(settings, http, routes),
    )
    pool.trouble.location_rest_s = settings.location_rest_s  # kiro/accounts/trouble.py
    pool.on_load, pool.proxy_of = routes.update, routes.proxy_of  # every load re-routes
    pool.slots = slot_gate(settings, store)
    await pool.load()
    if len(pool) == 0:
        problem = problem or no_credentials_error(discover(settings)).message
        log.warning("no Kiro credentials: %s", problem)
    return pool, problem


def slot_gate(settings: Settings, store: StateStore) -> SlotGate:
    """Caps, pace and the wait line; counted in the store when several workers serve."""
    config = SlotConfig(
        max_inflight=settings.account_max_inflight,
        pace_rpm=settings.account_pace_rpm,
        queue_wait_s=settings.queue_wait_s,
        queue_max=settings.queue_max,
        shared=settings.workers > 1,
    )
    return SlotGate(config, store)


def _backend(settings: Settings, chat: ChatTransport, pool: AccountPool) -> KiroBackend:
    return KiroBackend(
        chat,
        pool,
        BackendOptions(
            api_base=settings.kiro_api_base,
            profile_arn=settings.kiro_profile_arn,
            region=settings.kiro_region,
            max_body_bytes=settings.max_upstream_bytes,
            max_image_bytes=settings.max_image_bytes_per_request,
            max_tools=settings.max_tools,
            trim_history=settings.trim_history,
            max_attempts=settings.max_attempts,
            first_event_timeout_s=settings.first_event_timeout_s,
            pool_wait_s=settings.pool_wait_s,
        ),
    )


def _image_fetcher(settings: Settings) -> ImageFetcher | None:
    if not settings.image_fetch:
        return None
    return ImageFetcher(
        max_bytes=settings.image_max_bytes,
        timeout_s=settings.image_timeout_s,
        allow_private=settings.image_allow_private,
    )
