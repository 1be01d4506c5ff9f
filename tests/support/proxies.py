"""Small outbound proxies for the tests: HTTP (forward and CONNECT, optional Basic auth), the
same over TLS (an `https://` proxy, with a certificate of a test CA), and SOCKS5 (optional
username/password), each in its own thread and event loop.

Each binds its OUTBOUND sockets to its own loopback address (127.0.0.2, 127.0.0.3, ...), so the
emulator's request log (`client`) tells which proxy carried a request. Each counts what passed:
`requests` (HTTP: one forwarded request per connection, as the proxy asks for `Connection:
close`; CONNECT tunnels and SOCKS connections count once each) and `refused` (bad credentials).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import struct
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["TestProxy", "http_proxy", "https_proxy", "socks5_proxy"]


@dataclass
class TestProxy:
    kind: str  # "http" | "https" | "socks5"
    outbound_ip: str
    user: str | None = None
    password: str | None = None
    port: int = 0
    requests: int = 0
    refused: int = 0
    tls: ssl.SSLContext | None = None  # the server side of an https proxy
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # every connection's writer (clients' and upstream), all closed when the proxy stops
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def url(self, *, user: str | None = None, password: str | None = None) -> str:
        user = self.user if user is None else user
        password = self.password if password is None else password
        auth = f"{user}:{password}@" if user else ""
        return f"{self.kind}://{auth}127.0.0.1:{self.port}"

    def count(self, *, refused: bool = False) -> None:
        with self._lock:
            if refused:
                self.refused += 1
            else:
                self.requests += 1

    async def _open(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(host, port, local_addr=(self.outbound_ip, 0))
        self._writers.append(writer)
        return reader, writer


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(ConnectionError, OSError, RuntimeError):
        writer.close()


async def _splice(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    await asyncio.gather(_pipe(a[0], b[1]), _pipe(b[0], a[1]))


def _basic_ok(proxy: TestProxy, headers: dict[str, str]) -> bool:
    if proxy.user is None:
        return True
    given = headers.get("proxy-authorization", "")
    want = base64.b64encode(f"{proxy.user}:{proxy.password}".encode()).decode()
    return given == f"Basic {want}"


async def _http_client(
    proxy: TestProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)
    }
    if not _basic_ok(proxy, headers):
        proxy.count(refused=True)
        writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n")
        writer.write(b'proxy-authenticate: Basic realm="test"\r\nconnection: close\r\n\r\n')
        await writer.drain()
        writer.close()
        return
    proxy.count()
    if method == "CONNECT":
        host, _, port = target.rpartition(":")
        upstream = await proxy._open(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await _splice((reader, writer), upstream)
        return
    url = urlsplit(target)
    upstream = await proxy._open(url.hostname or "", url.port or 80)
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    kept = [x for x in lines[1:] if x and not x.lower().startswith(("proxy-", "connection:"))]
    out = "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close", "", ""])
    upstream[1].write(out.encode("latin-1"))
    await _splice((reader, writer), upstream)


async def _socks_client(
    proxy: TestProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    _ver, n = await reader.readexactly(2)
    methods = await reader.readexactly(n)
    want = 2 if proxy.user is not None else 0
    if want not in methods:
        writer.write(b"\x05\xff")
        proxy.count(refused=True)
        writer.close()
        return
    writer.write(bytes([5, want]))
    if want == 2:
        _v, ulen = await reader.readexactly(2)
        user = (await reader.readexactly(ulen)).decode()
        (plen,) = await reader.readexactly(1)
        password = (await reader.readexactly(plen)).decode()
        if (user, password) != (proxy.user, proxy.password):
            writer.write(b"\x01\x01")
            proxy.count(refused=True)
            writer.close()
            return
        writer.write(b"\x01\x00")
    _v, _cmd, _rsv, atyp = await reader.readexactly(4)
    if atyp == 1:
        host = ".".join(str(b) for b in await reader.readexactly(4))
    elif atyp == 3:
        (length,) = await reader.readexactly(1)
        host = (await reader.readexactly(length)).decode()
    else:
        raw = await reader.readexactly(16)
        host = ":".join(raw[i : i + 2].hex() for i in range(0, 16, 2))
    (port,) = struct.unpack("!H", await reader.readexactly(2))
    proxy.count()
    upstream = await proxy._open(host, port)
    writer.write(b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00")
    await writer.drain()
    await _splice((reader, writer), upstream)


@contextlib.contextmanager
def _serve(proxy: TestProxy) -> Iterator[TestProxy]:
    loop = asyncio.new_event_loop()
    handler = _socks_client if proxy.kind == "socks5" else _http_client
    started = threading.Event()
    server: list[asyncio.Server] = []

    tasks: set[asyncio.Task[None]] = set()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        proxy._writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        with contextlib.suppress(Exception):
            await handler(proxy, reader, writer)

    async def start() -> None:
        srv = await asyncio.start_server(on_client, "127.0.0.1", 0, ssl=proxy.tls)
        proxy.port = srv.sockets[0].getsockname()[1]
        server.append(srv)
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop)
    assert started.wait(10)
    try:
        yield proxy
    finally:

        async def stop() -> None:
            """Close the listener and every connection still open (e.g. a client's keep-alive
            tunnel), so nothing is left for the garbage collector to warn about."""
            server[0].close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for writer in proxy._writers:
                with contextlib.suppress(Exception):
                    writer.close()
                    await asyncio.wait_for(writer.wait_closed(), 2)

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def http_proxy(
    outbound_ip: str, user: str | None = None, password: str | None = None
) -> AbstractContextManager[TestProxy]:
    return _serve(TestProxy("http", outbound_ip, user, password))


def https_proxy(
    outbound_ip: str, tls: ssl.SSLContext, user: str | None = None, password: str | None = None
) -> AbstractContextManager[TestProxy]:
    """An HTTP proxy reached over TLS (`tls`: its server context, e.g. a trustme certificate
    for 127.0.0.1)."""
    return _serve(TestProxy("https", outbound_ip, user, password, tls=tls))


def socks5_proxy(
    outbound_ip: str, user: str | None = None, password: str | None = None
) -> AbstractContextManager[TestProxy]:
    return _serve(TestProxy("socks5", outbound_ip, user, password))
