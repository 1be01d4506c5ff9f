"""The shared upstream HTTP client, and the one place httpx exceptions become GatewayErrors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from ki2api.core.errors import NetworkFailure, network_error
from ki2api.settings import Settings

__all__ = ["create_upstream_client", "map_transport_errors"]


def create_upstream_client(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """One keep-alive connection pool for every upstream call (chat, refresh, models)."""
    timeout = httpx.Timeout(
        connect=settings.connect_timeout_s,
        read=settings.read_timeout_s,
        write=30.0,
        pool=settings.connect_timeout_s,
    )
    limits = httpx.Limits(
        max_connections=settings.max_connections,
        max_keepalive_connections=min(settings.max_connections, 100),
        keepalive_expiry=60.0,
    )
    return httpx.AsyncClient(
        timeout=timeout, limits=limits, transport=transport, follow_redirects=False
    )


@contextmanager
def map_transport_errors(what: str = "Kiro") -> Iterator[None]:
    """The one place httpx exceptions become GatewayErrors; the most specific class wins.
    The same table as `kiro.transport.map_aiohttp_errors` (aiohttp): no connection (refused,
    or not made in time) is UPSTREAM_UNAVAILABLE, an answer that did not come in time
    UPSTREAM_TIMEOUT, a connection that broke off UPSTREAM_PROTOCOL; all three are retryable.
    `what` names the service in the message (never a URL, a token or the upstream body)."""
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise network_error(NetworkFailure.NO_CONNECTION, what, exc) from None
    except httpx.TimeoutException as exc:
        raise network_error(NetworkFailure.NO_ANSWER, what, exc) from None
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        raise network_error(NetworkFailure.BROKEN, what, exc) from None
    except httpx.HTTPError as exc:
        raise network_error(NetworkFailure.OTHER, what, exc) from None
