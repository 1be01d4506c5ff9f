"""The chat call's HTTP client: one shared aiohttp session (keep-alive pool, C parser).

The streaming chat call is the hot path: every upstream event crosses it. httpx parses HTTP/1.1
chunks in pure Python (h11) and walks its whole pool on every request; aiohttp parses in C and
hands over everything that arrived in one read. Measured on the benchmark (bench/README.md),
this halves the gateway's CPU per event and per request. Refresh calls, which are rare, stay on
httpx. aiohttp exceptions become GatewayErrors here and nowhere else (`map_aiohttp_errors`).

The backend and the web search see the chat call through two small protocols, `ChatTransport`
and `ChatResponse` (the shape httpx gives its transports: post one request, read its answer as
it arrives, close): `AiohttpChatTransport` is the real one, and the tests drive the backend
through an in-process scripted one (tests/support/fake_transport.py) with no socket.
"""

from __future__ import annotations

import asyncio
import io
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp

from ki2api.core.errors import NetworkFailure, network_error

__all__ = [
    "AiohttpChatResponse",
    "AiohttpChatTransport",
    "ChatResponse",
    "ChatTransport",
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

    def chunks(self) -> AsyncIterator[bytes]:
        """Whatever bytes have arrived, as they arrive (not aligned to frames); GatewayError
        when the connection breaks off."""
        ...

    async def arrived(self) -> tuple[bytes, bool]:
        """The bytes that already arrived behind the last read, and whether the body is
        complete; never waits for the network (the backend's first-content hold)."""
        ...

    async def aclose(self) -> None:
        """Release the answer; one abandoned half-way ends its upstream call."""
        ...


class ChatTransport(Protocol):
    """Sends the chat call (and the web search, same host); GatewayError on network failure."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> ChatResponse: ...

    async def aclose(self) -> None: ...


async def read_body(response: ChatResponse, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of the body, and whether there was more; closes the response."""
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in response.chunks():
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                return b"".join(parts)[:limit], True
    finally:
        await response.aclose()
    return b"".join(parts), False


@contextmanager
def map_aiohttp_errors(what: str = "Kiro") -> Iterator[None]:
    """The one place aiohttp exceptions become GatewayErrors; the most specific class wins.
    The same table as `http_client.map_transport_errors` (httpx): no connection (refused, or
    not made in time) is UPSTREAM_UNAVAILABLE, an answer that did not come in time
    UPSTREAM_TIMEOUT, a connection that broke off UPSTREAM_PROTOCOL; all three are retryable."""
    try:
        yield
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        raise network_error(NetworkFailure.NO_CONNECTION, what, exc) from None
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise network_error(NetworkFailure.NO_ANSWER, what, exc) from None
    except (
        aiohttp.ClientPayloadError,
        aiohttp.ServerDisconnectedError,
        aiohttp.ClientOSError,
    ) as exc:
        raise network_error(NetworkFailure.BROKEN, what, exc) from None
    except aiohttp.ClientError as exc:
        raise network_error(NetworkFailure.OTHER, what, exc) from None


class AiohttpChatResponse:
    """An aiohttp response whose body is read incrementally."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status: int = response.status
        self.headers: Mapping[str, str] = response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        """Whatever bytes have arrived, as they arrive (not aligned to frames or chunks)."""
        content = self._response.content
        with map_aiohttp_errors():
            while True:
                data = await content.readany()
                if not data:
                    return
                yield data

    async def arrived(self) -> tuple[bytes, bool]:
        """The bytes that have already arrived behind the last read (the event loop first
        gets two turns to read the socket), and whether the body is complete. Never waits
        for the network."""
        for _ in range(2):
            await asyncio.sleep(0)
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


class AiohttpChatTransport:
    """One aiohttp session for every chat call; create and close it inside the event loop."""

    def __init__(
        self,
        *,
        max_connections: int,
        connect_timeout_s: float,
        read_timeout_s: float,
    ) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[str, str | None] = {}
        self._max = max_connections
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s
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

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max, limit_per_host=self._max, keepalive_timeout=60
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                trust_env=False,  # proxies are resolved once per host (see _proxy_for)
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AiohttpChatResponse:
        session = self._open()
        # aiohttp streams a large body from a file-like object instead of one big write.
        data: bytes | io.BytesIO = body if len(body) < _LARGE_BODY else io.BytesIO(body)
        with map_aiohttp_errors():
            response = await session.post(
                url, data=data, headers=dict(headers), proxy=self._proxy_for(url)
            )
        return AiohttpChatResponse(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            await asyncio.sleep(0)  # let the connector close its transports
            self._session = None
