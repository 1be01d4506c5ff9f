"""The shared upstream HTTP client, and the one place httpx exceptions become GatewayErrors."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import certifi
import httpcore
import httpx

from ki2api.core.errors import NetworkFailure, network_error
from ki2api.core.proxy import ProxyURL, proxy_failure
from ki2api.settings import Settings, SettingsError

__all__ = [
    "AccountProxyError",
    "create_proxied_client",
    "create_upstream_client",
    "map_transport_errors",
    "proxy_tls",
]


def _timeout(settings: Settings) -> httpx.Timeout:
    return httpx.Timeout(
        connect=settings.connect_timeout_s,
        read=settings.read_timeout_s,
        write=30.0,
        pool=settings.connect_timeout_s,
    )


def _limits(settings: Settings) -> httpx.Limits:
    return httpx.Limits(
        max_connections=settings.max_connections,
        max_keepalive_connections=min(settings.max_connections, 100),
        keepalive_expiry=60.0,
    )


def create_upstream_client(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """One keep-alive connection pool for every upstream call (chat, refresh, models) of the
    accounts without a proxy (HTTPS_PROXY / NO_PROXY from the environment apply)."""
    return httpx.AsyncClient(
        timeout=_timeout(settings),
        limits=_limits(settings),
        transport=transport,
        follow_redirects=False,
    )


class AccountProxyError(httpx.ProxyError):
    """A call that failed at an account's own proxy: it could not be reached (refused, no
    connection in time), refused the credentials (407) or could not open the tunnel."""

    def __init__(self, message: str, *, request: httpx.Request, status: int | None) -> None:
        super().__init__(message, request=request)
        self.status = status


# The sockets opened for the call in progress (see _TrackedBackend).
_OPENED: ContextVar[list[httpcore.AsyncNetworkStream] | None] = ContextVar(
    "ki2api_proxy_streams", default=None
)


class _TrackedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, noting each socket it opens for the call in progress:
    httpcore does not close the socket of a SOCKS5 handshake that failed (wrong credentials,
    a refused target), so _ProxiedTransport closes it."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        opened = _OPENED.get()
        if opened is not None:
            opened.append(stream)
        return stream

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:  # pragma: no cover - proxies are reached over TCP
        return await self._inner.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _ProxiedTransport(httpx.AsyncBaseTransport):
    """An account's proxy: every connection is made to the proxy, so a failure to connect is
    the proxy's (Kiro behind it answers through the tunnel, or the tunnel fails)."""

    def __init__(self, inner: httpx.AsyncHTTPTransport) -> None:
        self._inner = inner
        pool = inner._pool
        if isinstance(pool, httpcore.AsyncSOCKSProxy):
            pool._network_backend = _TrackedBackend(pool._network_backend)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        opened: list[httpcore.AsyncNetworkStream] = []
        token = _OPENED.set(opened)
        try:
            response = await self._inner.handle_async_request(request)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError) as exc:
            for stream in opened:  # a connection that failed to open: nothing else holds it
                with contextlib.suppress(Exception):
                    await stream.aclose()
            status = 407 if "407" in str(exc) else None
            raise AccountProxyError(type(exc).__name__, request=request, status=status) from exc
        finally:
            _OPENED.reset(token)
        if response.status_code == 407:  # a plain-HTTP call forwarded by the proxy
            await response.aclose()
            raise AccountProxyError("407", request=request, status=407)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def proxy_tls(settings: Settings) -> ssl.SSLContext | None:
    """How the TLS to an https:// proxy itself is checked: the usual CAs (certifi's) and those
    of KI2API_PROXY_CA_FILE (a proxy with a private CA). Only the proxy's own certificate is
    checked with it: Kiro's, through the tunnel, never trusts that file. None: no file (the
    libraries' defaults). SettingsError for a file that holds no usable CA (cli/main.py checks
    it at start)."""
    if settings.proxy_ca_file is None:
        return None
    context = ssl.create_default_context(cafile=certifi.where())
    try:
        context.load_verify_locations(cafile=str(settings.proxy_ca_file))
    except OSError as exc:  # ssl.SSLError too: not PEM, no certificate in it
        raise SettingsError(
            f"KI2API_PROXY_CA_FILE: no CA certificate (PEM) read from {settings.proxy_ca_file}: "
            f"{exc.strerror or type(exc).__name__}"
        ) from None
    return context


def create_proxied_client(settings: Settings, proxy: ProxyURL) -> httpx.AsyncClient:
    """The connection pool of one outbound proxy (http, https, socks5, socks5h), used by the
    accounts that go through it; the environment's proxy settings do not apply."""
    tls = proxy_tls(settings) if proxy.scheme == "https" else None
    inner = httpx.AsyncHTTPTransport(
        proxy=httpx.Proxy(proxy.url, ssl_context=tls), limits=_limits(settings), trust_env=False
    )
    return httpx.AsyncClient(
        timeout=_timeout(settings),
        transport=_ProxiedTransport(inner),
        follow_redirects=False,
        trust_env=False,
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
    except AccountProxyError as exc:
        raise proxy_failure(exc.__cause__ or exc, exc.status) from None
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise network_error(NetworkFailure.NO_CONNECTION, what, exc) from None
    except httpx.TimeoutException as exc:
        raise network_error(NetworkFailure.NO_ANSWER, what, exc) from None
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        raise network_error(NetworkFailure.BROKEN, what, exc) from None
    except httpx.HTTPError as exc:
        raise network_error(NetworkFailure.OTHER, what, exc) from None
