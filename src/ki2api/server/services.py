"""Services: the objects a running gateway is made of, built once per app in the lifespan."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.models import ModelCatalogue, default_catalogue
from ki2api.images.fetch import ImageFetcher
from ki2api.kiro.backend import BackendOptions, KiroBackend
from ki2api.kiro.chat_transport import ChatTransport
from ki2api.kiro.credentials import KiroCredentials
from ki2api.kiro.websearch import KiroWebSearch
from ki2api.settings import Settings
from ki2api.transport import create_upstream_client

__all__ = ["Services", "build_services"]

log = logging.getLogger("ki2api")


@dataclass
class Services:
    settings: Settings
    http: httpx.AsyncClient
    catalogue: ModelCatalogue
    credentials: KiroCredentials | None
    backend: KiroBackend | None
    chat: ChatTransport | None = None
    credentials_problem: str | None = None
    images: ImageFetcher | None = None
    web_search: KiroWebSearch | None = None

    def require_web_search(self) -> KiroWebSearch:
        if self.web_search is None:
            raise GatewayError(
                ErrorKind.NO_CREDENTIALS,
                self.credentials_problem or "No Kiro login is configured.",
            )
        return self.web_search

    def require_backend(self) -> KiroBackend:
        if self.backend is None:
            raise GatewayError(
                ErrorKind.NO_CREDENTIALS,
                self.credentials_problem or "No Kiro login is configured.",
            )
        return self.backend

    async def aclose(self) -> None:
        if self.chat is not None:
            await self.chat.aclose()
        await self.http.aclose()


def build_services(
    settings: Settings, *, upstream_transport: httpx.AsyncBaseTransport | None = None
) -> Services:
    http = create_upstream_client(settings, upstream_transport)
    catalogue = default_catalogue(family_fallback=settings.model_fallback).with_overrides(
        settings.model_overrides
    )
    images = _image_fetcher(settings)
    try:
        credentials = KiroCredentials.from_settings(settings, http)
    except GatewayError as exc:
        log.warning("no Kiro credentials: %s", exc.message)
        return Services(
            settings, http, catalogue, None, None, credentials_problem=exc.message, images=images
        )
    chat = ChatTransport(
        max_connections=settings.max_connections,
        connect_timeout_s=settings.connect_timeout_s,
        read_timeout_s=settings.read_timeout_s,
    )
    backend = KiroBackend(
        chat,
        credentials,
        BackendOptions(
            api_base=settings.kiro_api_base,
            profile_arn=settings.kiro_profile_arn,
            max_body_bytes=settings.max_upstream_bytes,
            trim_history=settings.trim_history,
        ),
    )
    web_search = KiroWebSearch(
        chat, credentials, api_base=settings.kiro_api_base, profile_arn=settings.kiro_profile_arn
    )
    return Services(
        settings,
        http,
        catalogue,
        credentials,
        backend,
        chat,
        images=images,
        web_search=web_search,
    )


def _image_fetcher(settings: Settings) -> ImageFetcher | None:
    if not settings.image_fetch:
        return None
    return ImageFetcher(
        max_bytes=settings.image_max_bytes,
        timeout_s=settings.image_timeout_s,
        allow_private=settings.image_allow_private,
    )
