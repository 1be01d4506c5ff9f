"""The chat call's HTTP client: one shared aiohttp session (keep-alive pool, C parser).

The streaming chat call is the hot path: every upstream event crosses it. httpx parses HTTP/1.1
chunks in pure Python (h11) and walks its whole pool on every request; aiohttp parses in C and
hands over everything that arrived in one read. Measured on the benchmark (bench/README.md),
this halves the gateway's CPU per event and per request. A call that needs no proxy goes through
the lighter `http11.DirectChatClient` instead (same failures, as aiohttp's exception classes).
Refresh calls, which are rare, stay on httpx. aiohttp exceptions become GatewayErrors here and
nowhere else (`aiohttp_error`, and `map_aiohttp_errors` around a block).

The backend and the web search see the chat call through two small protocols, `ChatTransport`
and `ChatResponse` (the shape httpx gives its transports: post one request, read its answer as
it arrives, close): `AiohttpChatTransport` is the real one, and the tests drive the backend
through an in-process scripted one (tests/support/fake_transport.py) with no socket.
"""

from __future__ import annotations

import asyncio
import io
import ssl
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import aiohttp_socks
from python_socks import ProxyType

from ki2api.core.errors import NetworkFailure, network_error
from ki2api.core.proxy import ProxyURL, proxy_failure
from ki2api.kiro.http11 import DirectChatClient

__all__ = [
    "AiohttpChatResponse",
    "AiohttpChatTransport",
    "ChatResponse",
    "ChatTransport",
    "aiohttp_error",
    "map_aiohttp_errors",
    "read_body",
]

_LARGE_BODY = 512 * 1024


class ChatResponse(Protocol):
    """An upstream answer whose body is read as it arrives."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read(self) -> bytes:
        """Whatever bytes have arrived since the last read, waiting for some (not aligned to
        frames); b"" at the end of the body; GatewayError when the connection breaks off."""
        ...

    async def arrived(self) -> tuple[bytes, bool]:
        """The bytes that already arrived behind the last read, and whether the body is
        complete; never waits for the network (the backend's first-content hold, which gives
        the event loop its turns to read the socket first)."""
        ...

    async def aclose(self) -> None:
        """Release the answer; one abandoned half-way ends its upstream call."""
        ...


class ChatTransport(Protocol):
    """Sends the chat call (and the web search, same host); GatewayError on network failure.
    `proxy`: the account's outbound proxy (None: HTTPS_PROXY / NO_PROXY of the environment);
    a failure at the proxy is a GatewayError with code `proxy_failed` (core/proxy.py)."""

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        proxy: ProxyURL | None = None,
    ) -> ChatResponse: ...

    async def aclose(self) -> None: ...


async def read_body(response: ChatResponse, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of the body, and whether there was more; closes the response."""
    parts: list[bytes] = []
    size = 0
    try:
        while chunk := await response.read():
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                return b"".join(parts)[:limit], True
    finally:
        await response.aclose()
    return b"".join(parts), False


_BROKEN = (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


def aiohttp_error(exc: BaseException, what: str = "Kiro") -> BaseException:
    """The one place aiohttp exceptions become GatewayErrors (anything else comes back as it
    is); the most specific class wins. The same table as `http_client.map_transport_errors`
    (httpx): no connection (refused, or not made in time) is UPSTREAM_UNAVAILABLE, an answer
    that did not come in time UPSTREAM_TIMEOUT, a connection that broke off UPSTREAM_PROTOCOL;
    all three are retryable."""
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
        return network_error(NetworkFailure.NO_CONNECTION, what, exc)
    if isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError)):
        return network_error(NetworkFailure.NO_ANSWER, what, exc)
    if isinstance(exc, _BROKEN):
        return network_error(NetworkFailure.BROKEN, what, exc)
    if isinstance(exc, aiohttp.ClientError):
        return network_error(NetworkFailure.OTHER, what, exc)
    return exc


@contextmanager
def map_aiohttp_errors(what: str = "Kiro") -> Iterator[None]:
    """`aiohttp_error` around a block."""
    try:
        yield
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise aiohttp_error(exc, what) from None


# Failures at an account's proxy: none of these happens once the tunnel to Kiro is open.
_PROXY_FAILURES = (
    aiohttp.ClientProxyConnectionError,  # the proxy could not be reached
    aiohttp.ClientHttpProxyError,  # the proxy answered CONNECT with an error (407, 502, ...)
    aiohttp_socks.ProxyConnectionError,
    aiohttp_socks.ProxyTimeoutError,
    aiohttp_socks.ProxyError,  # a SOCKS reply: bad credentials, target unreachable
    # every connection is made to the proxy: not connecting in time is the proxy's fault too
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
)


@contextmanager
def _proxy_errors(proxy: ProxyURL | None) -> Iterator[None]:
    """Failures at an account's own proxy -> `proxy_failed` (the account's fault)."""
    if proxy is None:
        yield
        return
    try:
        yield
    except _PROXY_FAILURES as exc:
        status = exc.status if isinstance(exc, aiohttp.ClientHttpProxyError) else None
        raise proxy_failure(exc, status) from None


class AiohttpChatResponse:
    """An aiohttp response whose body is read incrementally."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status: int = response.status
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        """Whatever bytes have arrived, waiting for some (not aligned to frames or chunks)."""
        try:
            return await self._response.content.readany()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise aiohttp_error(exc) from None

    async def arrived(self) -> tuple[bytes, bool]:
        """The bytes that have already arrived behind the last read, and whether the body is
        complete. Never waits for the network."""
        content = self._response.content
        with map_aiohttp_errors():
            data = content.read_nowait()
        return data, content.at_eof()

    async def aclose(self) -> None:
        # release() keeps the connection only when the body was read to the end; a stream
        # abandoned half-way (client disconnect) closes its connection, ending the upstream call.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


def _basic(proxy: ProxyURL) -> str:
    return aiohttp.encode_basic_auth(proxy.username or "", proxy.password or "")


class _ProxyTLSConnector(aiohttp.TCPConnector):
    """The connector of one https:// proxy: the TLS to the proxy itself is checked with
    `proxy_tls` (the usual CAs plus KI2API_PROXY_CA_FILE); any other TLS (Kiro's, inside the
    tunnel) keeps aiohttp's default check."""

    def __init__(self, proxy: ProxyURL, proxy_tls: ssl.SSLContext, **kw: Any) -> None:
        super().__init__(**kw)
        self._proxy_origin = (proxy.host, proxy.port)
        self._proxy_tls = proxy_tls

    def _get_ssl_context(self, req: aiohttp.ClientRequest) -> ssl.SSLContext | None:
        if req.is_ssl() and (req.url.host, req.url.port) == self._proxy_origin:
            return self._proxy_tls  # the request that opens the connection to the proxy
        return super()._get_ssl_context(req)


class AiohttpChatTransport:
    """One aiohttp session for the chat calls of the accounts without a proxy, and one per
    outbound proxy (made when first used); create and close them inside the event loop.
    `proxy_tls`: how the TLS to an https:// proxy is checked (None: aiohttp's default)."""

    def __init__(
        self,
        *,
        max_connections: int,
        connect_timeout_s: float,
        read_timeout_s: float,
        proxy_tls: ssl.SSLContext | None = None,
    ) -> None:
        self._proxy_tls = proxy_tls
        self._sessions: dict[ProxyURL | None, aiohttp.ClientSession] = {}
        self._proxies: dict[str, str | None] = {}
        self._max = max_connections
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s
        )
        # calls that go straight to Kiro (no proxy): the lighter client (kiro/http11.py)
        self._direct = DirectChatClient(
            aiohttp_error,
            max_connections=max_connections,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
        )

    def _proxy_for(self, url: str) -> str | None:
        """HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment, as httpx honours them.

        Looked up once per host: aiohttp's own `trust_env` re-reads the environment and
        ~/.netrc (in a thread) on every request, which was a tenth of our CPU per request.
        """
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.hostname}"
        if key not in self._proxies:
            proxies = urllib.request.getproxies_environment()
            bypass = bool(proxies) and urllib.request.proxy_bypass(parts.hostname or "")
            self._proxies[key] = None if bypass else proxies.get(parts.scheme)
        return self._proxies[key]

    def _connector(self, proxy: ProxyURL | None) -> aiohttp.TCPConnector:
        if proxy is not None and proxy.socks:  # SOCKS5 is spoken by the connector itself
            return aiohttp_socks.ProxyConnector(
                proxy_type=ProxyType.SOCKS5,
                host=proxy.host,
                port=proxy.port,
                username=proxy.username,
                password=proxy.password,
                rdns=proxy.scheme == "socks5h",
                limit=self._max,
                limit_per_host=self._max,
                keepalive_timeout=60,
            )
        if proxy is not None and proxy.scheme == "https" and self._proxy_tls is not None:
            return _ProxyTLSConnector(
                proxy, self._proxy_tls, limit=self._max, limit_per_host=self._max,
                keepalive_timeout=60,
            )  # fmt: skip
        return aiohttp.TCPConnector(limit=self._max, limit_per_host=self._max, keepalive_timeout=60)

    def _open(self, proxy: ProxyURL | None) -> aiohttp.ClientSession:
        session = self._sessions.get(proxy)
        if session is None:
            session = self._sessions[proxy] = aiohttp.ClientSession(
                connector=self._connector(proxy),
                timeout=self._timeout,
                trust_env=False,  # proxies are resolved once per host (see _proxy_for)
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return session

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        proxy: ProxyURL | None = None,
    ) -> ChatResponse:
        via: str | None = self._proxy_for(url) if proxy is None else None
        if proxy is None and via is None:
            with map_aiohttp_errors():
                return await self._direct.post(url, body, headers)
        session = self._open(proxy)
        # aiohttp streams a large body from a file-like object instead of one big write.
        data: bytes | io.BytesIO = body if len(body) < _LARGE_BODY else io.BytesIO(body)
        auth: dict[str, str] | None = None
        sent = dict(headers)
        if proxy is not None and not proxy.socks:
            via = proxy.masked
            if proxy.username:
                auth = {"Proxy-Authorization": _basic(proxy)}
                if url.startswith("http:"):  # forwarded, not tunnelled: the proxy reads it
                    sent.update(auth)
        with map_aiohttp_errors(), _proxy_errors(proxy):
            response = await session.post(
                url, data=data, headers=sent, proxy=via, proxy_headers=auth
            )
            if proxy is not None and response.status == 407:  # a plain-HTTP call, forwarded
                response.release()
                raise aiohttp.ClientHttpProxyError(
                    response.request_info, (), status=407, message="Proxy Authentication Required"
                )
        return AiohttpChatResponse(response)

    async def aclose(self) -> None:
        await self._direct.aclose()
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()
        if sessions:
            await asyncio.sleep(0)  # let the connectors close their transports
