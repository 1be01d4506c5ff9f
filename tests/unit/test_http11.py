"""kiro/http11.py, the chat call's direct HTTP/1.1 client, against a scripted local socket server:
what goes upstream, keep-alive, and each way a call fails (the same GatewayErrors as aiohttp's)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.kiro import http11
from ki2api.kiro.transport import AiohttpChatTransport, ChatResponse, read_body

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Start = Callable[[Handler], Awaitable["Upstream"]]


class Upstream:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.heads: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/generateAssistantResponse"


async def read_request(up: Upstream, reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    up.heads.append(head)
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.startswith(b"Content-")
    )
    return await reader.readexactly(length)


@pytest.fixture
async def upstream() -> AsyncIterator[Start]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> Upstream:
        up = Upstream(handler)
        up.server = await asyncio.start_server(up._serve, "127.0.0.1", 0)
        servers.append(up.server)
        return up

    yield start
    for server in servers:
        server.close()


def transport(read_timeout_s: float = 5.0) -> AiohttpChatTransport:
    return AiohttpChatTransport(
        max_connections=4, connect_timeout_s=2, read_timeout_s=read_timeout_s
    )


async def body_of(response: ChatResponse) -> bytes:
    parts = []
    while chunk := await response.read():
        parts.append(chunk)
    return b"".join(parts)


async def test_a_call_sends_host_headers_and_length_and_the_connection_is_kept(
    upstream: Start,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            body = await read_request(up, reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kind: a\r\n\r\n")
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
            await writer.drain()

    up = await upstream(handler)
    chat = transport()
    try:
        for _ in range(2):
            response = await chat.post(up.url, b'{"a":1}', {"authorization": "Bearer t"})
            assert response.status == 200 and response.headers["x-kind"] == "a"
            assert await body_of(response) == b'{"a":1}'
            await response.aclose()
    finally:
        await chat.aclose()
    assert up.connections == 1  # kept alive between the calls
    port = up.url.split(":")[2].split("/")[0]
    assert up.heads[0] == (
        b"POST /generateAssistantResponse HTTP/1.1\r\nHost: 127.0.0.1:%s\r\n"
        b"authorization: Bearer t\r\nContent-Length: 7\r\n\r\n" % port.encode()
    )


async def test_an_error_answer_is_read_whole(upstream: Start) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(up, reader)
        writer.write(b"HTTP/1.1 429 Too Many\r\nContent-Length: 4\r\nRetry-After: 3\r\n\r\nslow")
        await writer.drain()

    up = await upstream(handler)
    chat = transport()
    try:
        response = await chat.post(up.url, b"{}", {})
        assert response.status == 429 and response.headers["retry-after"] == "3"
        assert await read_body(response, 100) == (b"slow", False)
    finally:
        await chat.aclose()


async def test_a_body_cut_off_is_a_broken_connection(upstream: Start) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(up, reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()

    up = await upstream(handler)
    chat = transport()
    try:
        response = await chat.post(up.url, b"{}", {})
        with pytest.raises(GatewayError) as caught:
            await body_of(response)
        await response.aclose()
    finally:
        await chat.aclose()
    assert caught.value.kind is ErrorKind.UPSTREAM_PROTOCOL
    assert "ClientPayloadError" in caught.value.message


async def test_silence_is_a_read_timeout_and_no_listener_no_connection(upstream: Start) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(up, reader)
        await reader.read()  # silent until the caller gives up and closes

    up = await upstream(handler)
    chat = transport(read_timeout_s=0.05)
    try:
        url = up.url
        with pytest.raises(GatewayError) as silent:
            await chat.post(url, b"{}", {})
        assert up.server is not None
        up.server.close()
        await up.server.wait_closed()
        with pytest.raises(GatewayError) as refused:
            await chat.post(url, b"{}", {})
        with pytest.raises(ValueError):
            await chat.post(url, b"{}", {"x": "a\r\nInjected: 1"})
    finally:
        await chat.aclose()
    assert silent.value.kind is ErrorKind.UPSTREAM_TIMEOUT
    assert refused.value.kind is ErrorKind.UPSTREAM_UNAVAILABLE
    assert "ClientConnectorError" in refused.value.message


async def test_https_checks_the_certificate_and_names_the_host(
    upstream: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    authority = trustme.CA()
    served = authority.issue_cert("localhost")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.configure_cert(server_tls)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(up, reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    up = Upstream(handler)
    up.server = await asyncio.start_server(up._serve, "localhost", 0, ssl=server_tls)
    port = up.server.sockets[0].getsockname()[1]
    chat = transport()
    try:  # the system's CAs do not know this one: refused, as aiohttp refuses it
        with pytest.raises(GatewayError) as untrusted:
            await chat.post(f"https://localhost:{port}/x", b"{}", {})
        assert untrusted.value.kind is ErrorKind.UPSTREAM_UNAVAILABLE

        def trusting() -> ssl.SSLContext:
            context = ssl.create_default_context()
            authority.configure_trust(context)
            return context

        monkeypatch.setattr(http11, "_tls_context", trusting)
        chat2 = transport()
        response = await chat2.post(f"https://localhost:{port}/x", b"{}", {})
        assert response.status == 200 and await body_of(response) == b"ok"
        await response.aclose()
        await chat2.aclose()
    finally:
        await chat.aclose()
        up.server.close()
    assert up.heads[0].startswith(b"POST /x HTTP/1.1\r\nHost: localhost:%d\r\n" % port)
