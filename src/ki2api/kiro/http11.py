"""The chat call without a proxy: a small HTTP/1.1 client on an asyncio protocol + httptools.

aiohttp's client builds a request object, a writer, a response object, a payload stream with
three queues and a timer context per call; for one POST whose answer is read as it arrives most
of that is unused. Measured on the benchmark's stack (bench/README.md), this client takes 0.2 to
0.4 ms of CPU off every request and about 9 KB off every open stream. It is used only for calls
that go straight to Kiro (`transport.AiohttpChatTransport` keeps aiohttp for proxied ones), and it
fails the way aiohttp does: the same exception classes reach `transport.aiohttp_error`.

What goes upstream is what aiohttp sent: the request line, `Host`, the caller's headers as given
and `Content-Length`. Connections are kept alive per origin (at most `max_connections` in use;
an idle one is closed after `keepalive_s`); TLS is checked as aiohttp checks it by default.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Mapping
from typing import cast
from urllib.parse import urlsplit

import aiohttp
import httptools
from aiohttp.client_reqrep import ConnectionKey
from multidict import CIMultiDict, CIMultiDictProxy

from ki2api.core.deadlines import DeadlineWait

__all__ = ["DirectChatClient", "DirectResponse"]

_HIGH_WATER = 256 * 1024  # unread bytes before the socket stops being read
_Origin = tuple[str, str, int]  # scheme, host, port
# what turns an aiohttp exception raised here into its GatewayError (transport.aiohttp_error);
# a plain function rather than a context manager: a held stream keeps no object for it
Errors = Callable[[BaseException], BaseException]


def _tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.set_alpn_protocols(("http/1.1",))
    return context


class _Connection(DeadlineWait, asyncio.Protocol):
    """One HTTP/1.1 connection: one answer at a time, its body buffered until it is read.

    The read timeout is one entry on the loop's shared timer (core/deadlines.py), not a timer
    per read: set for the first wait and, when it falls due before the current wait's deadline
    (data came in between), set again for that deadline."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.idle_since = 0.0
        self.init_wait()  # the read timeout: core/deadlines.py
        self.start()

    def start(self) -> None:
        self.status = 0
        self.head: list[bytes] = []  # the header names and values, until the head is complete
        self.head_block = b""  # then: the same, joined by "\n" (one object for the stream)
        self.buffered: list[bytes] = []
        self.size = 0
        self.complete = False
        self.reusable = True
        self.error: BaseException | None = None
        self.waiter = None  # head or body: True when it expired

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(aiohttp.ClientPayloadError(f"malformed HTTP answer ({exc})"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self.stop_timing()
        if not self.complete:
            self.fail(
                aiohttp.ClientPayloadError("Response payload is not completed")
                if self.status
                else aiohttp.ServerDisconnectedError()
            )

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.reusable = False
        self.wake()

    def close(self) -> None:
        self.reusable = False
        self.stop_timing()
        if self.transport is not None:
            self.transport.close()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.head += (name, value)

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.reusable = self.parser.should_keep_alive()
        self.head_block = b"\n".join(self.head)  # neither holds a newline (llhttp refuses it)
        self.head = []
        self.wake()

    def on_body(self, body: bytes) -> None:
        self.buffered.append(body)
        self.size += len(body)
        if self.size > _HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
        self.wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self.wake()

    def take(self) -> bytes:
        parts = self.buffered
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        if self.size > _HIGH_WATER and self.transport is not None:
            self.transport.resume_reading()
        self.size = 0
        return data

    async def wait(self, timeout_s: float) -> None:
        """Until something arrives; SocketTimeoutError when nothing came for `timeout_s`."""
        try:
            expired = await self.waiting(timeout_s)
        finally:
            self.waiter = None
        if expired:
            raise self.timed_out(timeout_s)

    def timed_out(self, timeout_s: float) -> aiohttp.SocketTimeoutError:
        self.close()
        return aiohttp.SocketTimeoutError(f"Timeout on reading data from socket ({timeout_s} s)")


class DirectResponse:
    """An answer whose body is read as it arrives (`transport.ChatResponse`)."""

    __slots__ = ("_client", "_conn", "_head", "_headers", "_origin", "status")

    def __init__(self, client: DirectChatClient, origin: _Origin, conn: _Connection) -> None:
        self._client = client
        self._origin = origin
        self._conn: _Connection | None = conn
        self.status: int = conn.status
        # the header map is made when first asked for (a streamed 200's usually is not)
        self._head = conn.head_block
        self._headers: Mapping[str, str] | None = None
        conn.head_block = b""

    @property
    def headers(self) -> Mapping[str, str]:
        headers = self._headers
        if headers is None:
            parts = self._head.decode("latin-1").split("\n") if self._head else []
            pairs = zip(parts[::2], parts[1::2], strict=True)
            headers = self._headers = CIMultiDictProxy(CIMultiDict(pairs))
        return headers

    async def read(self) -> bytes:
        """The bytes that arrived since the last read, waiting for some; b"" at the end. (The
        wait inline: a held stream keeps one coroutine frame for it, no generator.)"""
        conn = self._conn
        assert conn is not None
        while True:
            if conn.buffered:
                return conn.take()
            if conn.complete:
                return b""
            error = conn.error
            if error is None:
                try:
                    expired = await conn.waiting(self._client.read_timeout_s)
                finally:
                    conn.waiter = None
                if not expired:
                    continue
                error = conn.timed_out(self._client.read_timeout_s)
            raise self._client.errors(error) from None

    async def arrived(self) -> tuple[bytes, bool]:
        """What already arrived behind the last read, and whether the body is complete; never
        waits for the network."""
        conn = self._conn
        assert conn is not None
        if conn.buffered:
            return conn.take(), conn.complete
        if conn.error is not None:
            raise self._client.errors(conn.error) from None
        return b"", conn.complete

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client.release(self._origin, conn)


class DirectChatClient:
    """Keep-alive HTTP/1.1 connections per origin; create and close it inside the event loop."""

    def __init__(
        self,
        errors: Errors,
        *,
        max_connections: int,
        connect_timeout_s: float,
        read_timeout_s: float,
        keepalive_s: float = 60.0,
    ) -> None:
        self.errors = errors
        self.read_timeout_s = read_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._keepalive_s = keepalive_s
        self._slots = asyncio.Semaphore(max_connections) if max_connections > 0 else None
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._targets: dict[str, tuple[_Origin, str, str]] = {}  # url -> origin, Host, path
        self._tls: ssl.SSLContext | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> DirectResponse:
        origin, host, path = self._target(url)
        head = [f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"]
        for name, value in headers.items():
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
                raise ValueError(f"Newline or carriage return detected in header {name!r}")
            head.append(f"{name}: {value}\r\n")
        head.append(f"Content-Length: {len(body)}\r\n\r\n")
        if self._slots is not None:
            await self._slots.acquire()
        try:
            conn = await self._connection(origin)
            try:
                return await self._exchange(origin, conn, "".join(head).encode("latin-1"), body)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            if self._slots is not None:
                self._slots.release()
            raise

    async def _exchange(
        self, origin: _Origin, conn: _Connection, head: bytes, body: bytes
    ) -> DirectResponse:
        assert conn.transport is not None
        conn.transport.writelines((head, body))
        while not conn.status:
            if conn.error is not None:
                raise conn.error
            await conn.wait(self.read_timeout_s)
        return DirectResponse(self, origin, conn)

    def _target(self, url: str) -> tuple[_Origin, str, str]:
        found = self._targets.get(url)
        if found is None:
            parts = urlsplit(url)
            tls = parts.scheme == "https"
            port = parts.port or (443 if tls else 80)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            host = parts.hostname or ""
            shown = host if parts.port is None else f"{host}:{port}"
            found = self._targets[url] = ((parts.scheme, host, port), shown, path)
        return found

    async def _connection(self, origin: _Origin) -> _Connection:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.open and now - conn.idle_since < self._keepalive_s:
                conn.start()
                return conn
            conn.close()
        return await self._connect(origin)

    async def _connect(self, origin: _Origin) -> _Connection:
        scheme, host, port = origin
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            if self._tls is None:
                self._tls = _tls_context()
            tls = self._tls
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, conn = await loop.create_connection(
                    _Connection, host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError:
            raise aiohttp.ConnectionTimeoutError(
                f"Connection timeout to host {scheme}://{host}:{port}"
            ) from None
        except OSError as exc:
            key = ConnectionKey(host, port, tls is not None, True, None, None, None)
            raise aiohttp.ClientConnectorError(key, exc) from None
        return conn

    def release(self, origin: _Origin, conn: _Connection) -> None:
        """Back to the idle list when its answer was read to the end; closed otherwise (a
        stream abandoned half-way ends its upstream call)."""
        if self._slots is not None:
            self._slots.release()
        conn.stop_timing()
        if conn.complete and conn.reusable and conn.error is None and conn.open:
            conn.idle_since = time.monotonic()
            self._idle.setdefault(origin, []).append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()
