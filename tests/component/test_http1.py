"""The gateway's HTTP/1.1 protocol (server/http1.py) under a real uvicorn server, spoken to over
raw sockets: what any HTTP/1.1 client may send (keep-alive, pipelining, `Expect: 100-continue`,
chunked bodies, HEAD, HTTP/1.0, large bodies both ways) and what a broken one may send.

The application is a small ASGI app whose paths each do one thing; every response is read
whole and compared byte for byte with what the app sent.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import pytest
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from ki2api.server.connections import MAX_HEAD_BYTES
from ki2api.server.http1 import protocol_for
from ki2api.server.http1_exchange import CLIENT_GONE
from ki2api.server.http1_shared import forwarded
from ki2api.settings import load_settings
from tests.support.servers import lifespan_done, serve_in_thread

BIG = 3 * 1024 * 1024  # above every socket buffer: the writer and the reader must pause


class Seen:
    """What the app saw, for the test thread (set from the server's thread)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.event = threading.Event()


SEEN = Seen()


async def _read_body(receive: Any) -> bytes:
    parts = []
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        parts.append(message["body"])
        if not message.get("more_body", False):
            return b"".join(parts)


async def _respond(send: Any, body: bytes, status: int = 200) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _piece(i: int) -> bytes:
    return bytes([65 + i % 26]) * 65536


BIG_BODY = b"".join(_piece(i) for i in range(BIG // 65536))


async def _big(send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for i in range(BIG // 65536):
        await send({"type": "http.response.body", "body": _piece(i), "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = await _read_body(receive)
    await _respond(send, scope["method"].encode() + b" " + body)


async def _boom(scope: dict[str, Any], receive: Any, send: Any) -> None:
    raise RuntimeError("the app failed before answering")


async def _silent(scope: dict[str, Any], receive: Any, send: Any) -> None:
    return  # never answers


async def _bad_header(scope: dict[str, Any], receive: Any, send: Any) -> None:
    headers = [(b"x-evil", b"a\r\nset-cookie: stolen=1")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})


async def _client(scope: dict[str, Any], receive: Any, send: Any) -> None:
    host = scope["client"][0] if scope["client"] else "-"
    await _respond(send, f"{host} {scope['scheme']}".encode())


async def _watch(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await _read_body(receive)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"first", "more_body": True})
    scope["extensions"][CLIENT_GONE](lambda: SEEN.messages.append({"type": "called back"}))
    SEEN.messages.append(await receive())  # the client goes away here
    SEEN.event.set()


async def _half(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    if scope["query_string"] == b"raise":
        raise RuntimeError("the app failed mid-response")


ROUTES = {
    "/half": _half,
    "/echo": _echo,
    "/hello": lambda scope, receive, send: _respond(send, b"hello"),
    "/big": lambda scope, receive, send: _big(send),
    "/boom": _boom,
    "/silent": _silent,
    "/bad-header": _bad_header,
    "/client": _client,
    "/watch": _watch,
}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if await lifespan_done(scope, receive, send):
        return
    route = ROUTES.get(scope["path"])
    if route is None:
        await _respond(send, b"not found", 404)
    else:
        await route(scope, receive, send)


@pytest.fixture(scope="module")
def address() -> Iterator[tuple[str, int]]:
    protocol = protocol_for(load_settings({}, dotenv=Path("/nonexistent/.env")))
    with serve_in_thread(app, http=protocol) as url:
        parts = urlsplit(url)
        assert parts.hostname and parts.port
        yield parts.hostname, parts.port


@contextmanager
def connection(address: tuple[str, int]) -> Iterator[tuple[socket.socket, BinaryIO]]:
    sock = socket.create_connection(address, timeout=10)
    f = sock.makefile("rb")
    try:
        yield sock, f
    finally:
        f.close()
        sock.close()


def read_response(f: BinaryIO, *, head: bool = False) -> tuple[int, dict[bytes, bytes], bytes]:
    """One response from `f`: status, headers (lower-case names), the decoded body."""
    status_line = f.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    status = int(status_line.split()[1])
    headers: dict[bytes, bytes] = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.rstrip(b"\r\n").partition(b": ")
        assert name.lower() not in headers, f"{name!r} twice"
        headers[name.lower()] = value
    if head or status in (100, 204, 304):
        return status, headers, b""
    if headers.get(b"transfer-encoding") == b"chunked":
        parts = []
        while (size := int(f.readline().strip(), 16)) != 0:
            parts.append(f.read(size))
            assert f.read(2) == b"\r\n"
        assert f.read(2) == b"\r\n"
        return status, headers, b"".join(parts)
    return status, headers, f.read(int(headers[b"content-length"]))


def closed(f: BinaryIO) -> bool:
    return f.read(1) == b""


def request(method: str, path: str, body: bytes = b"", extra: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nhost: t\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def test_keep_alive_serves_several_requests_on_one_connection(address: Any) -> None:
    with connection(address) as (sock, f):
        for i in range(3):
            sock.sendall(request("POST", "/echo", b"n%d" % i))
            assert read_response(f)[::2] == (200, b"POST n%d" % i)


def test_pipelined_requests_are_answered_in_order(address: Any) -> None:
    with connection(address) as (sock, f):
        sock.sendall(request("POST", "/echo", b"one") + request("GET", "/hello"))
        sock.sendall(request("POST", "/echo", b"three"))
        got = [read_response(f)[2] for _ in range(3)]
        assert got == [b"POST one", b"hello", b"POST three"]


def test_expect_100_continue_gets_its_interim_answer_before_the_body(address: Any) -> None:
    with connection(address) as (sock, f):
        head = b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\nexpect: 100-continue\r\n"
        sock.sendall(head + b"\r\n")
        interim = read_response(f)
        assert interim[0] == 100
        sock.sendall(b"data")
        assert read_response(f)[::2] == (200, b"POST data")


def test_a_chunked_request_body_arrives_whole(address: Any) -> None:
    with connection(address) as (sock, f):
        head = b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
        sock.sendall(head + b"3\r\nabc\r\n")
        sock.sendall(b"4\r\ndefg\r\n0\r\n\r\n")
        assert read_response(f)[::2] == (200, b"POST abcdefg")


def test_head_gets_the_headers_without_a_body(address: Any) -> None:
    with connection(address) as (sock, f):
        sock.sendall(request("HEAD", "/hello") + request("GET", "/hello"))
        status, headers, _ = read_response(f, head=True)
        assert (status, headers[b"content-length"]) == (200, b"5")
        assert read_response(f)[2] == b"hello"  # nothing of the HEAD's body came in between


def test_http_1_0_closes_after_the_response(address: Any) -> None:
    with connection(address) as (sock, f):
        sock.sendall(b"GET /hello HTTP/1.0\r\nhost: t\r\n\r\n")
        status, headers, body = read_response(f)
        assert (status, body, headers[b"connection"]) == (200, b"hello", b"close")
        assert closed(f)


@pytest.mark.parametrize(
    ("name", "data", "status"),
    [
        ("not HTTP", b"\x16\x03\x01 hello\r\n\r\n", 400),
        ("bad header line", b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        ("head too large", b"GET / HTTP/1.1\r\nx-big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n", 431),
    ],
)
def test_a_broken_request_gets_an_error_and_the_connection_closes(
    address: Any, name: str, data: bytes, status: int
) -> None:
    with connection(address) as (sock, f):
        sock.sendall(data)
        assert read_response(f)[0] == status, name
        assert closed(f)


@pytest.mark.parametrize(
    ("path", "status"), [("/boom", 500), ("/silent", 500)], ids=["raises", "never answers"]
)
def test_an_app_that_fails_before_answering_gets_a_500(
    address: Any, path: str, status: int
) -> None:
    with connection(address) as (sock, f):
        sock.sendall(request("GET", path))
        assert read_response(f)[0] == status
        assert closed(f)


@pytest.mark.parametrize("path", ["/half", "/half?raise"], ids=["returns", "raises"])
def test_a_response_the_app_leaves_unfinished_is_cut_not_completed(address: Any, path: str) -> None:
    """A chunked response without its last chunk: the client sees a broken response, never
    a complete one."""
    with connection(address) as (sock, f):
        sock.sendall(request("GET", path))
        rest = f.read()
        assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b"7\r\npartial\r\n"), rest


def test_a_header_value_with_a_line_break_is_never_written(address: Any) -> None:
    with connection(address) as (sock, f):
        sock.sendall(request("GET", "/bad-header"))
        assert f.read() == b""  # closed without a byte: no injected header reaches the client


def test_large_bodies_both_ways_pause_and_resume(address: Any) -> None:
    body = bytes(range(256)) * (BIG // 256)
    with connection(address) as (sock, f):
        sender = threading.Thread(target=sock.sendall, args=(request("POST", "/echo", body),))
        sender.start()
        assert read_response(f)[2] == b"POST " + body
        sender.join(10)
        sock.sendall(request("GET", "/big"))
        assert read_response(f)[2] == BIG_BODY


@pytest.mark.parametrize("pipelined", [False, True], ids=["alone", "a request pipelined behind"])
def test_a_client_gone_mid_response_is_seen_as_a_disconnect(address: Any, pipelined: bool) -> None:
    SEEN.messages.clear()
    SEEN.event.clear()
    with connection(address) as (sock, f):
        behind = request("POST", "/echo", b"next") if pipelined else b""
        sock.sendall(request("POST", "/watch", b"x") + behind)
        assert f.readline().startswith(b"HTTP/1.1 200")
    assert SEEN.event.wait(10)
    # the extension's callback first (from the connection's loss), then receive()'s answer
    assert SEEN.messages == [{"type": "called back"}, {"type": "http.disconnect"}]


def test_a_websocket_upgrade_is_answered_as_plain_http(address: Any) -> None:
    with connection(address) as (sock, f):
        extra = "connection: upgrade\r\nupgrade: websocket\r\n"
        sock.sendall(request("GET", "/hello", extra=extra))
        assert read_response(f)[::2] == (200, b"hello")
        sock.sendall(request("POST", "/echo", b"after"))  # the connection still speaks HTTP
        assert read_response(f)[::2] == (200, b"POST after")


def test_a_slow_client_stream_loses_nothing(address: Any) -> None:
    """The response is written faster than it is read: the server pauses on the transport's
    high-water mark and resumes as the client reads."""

    async def read_slowly() -> bytes:
        reader, writer = await asyncio.open_connection(*address)
        writer.write(request("GET", "/big"))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        parts = []
        while (size := int((await reader.readline()).strip(), 16)) != 0:
            parts.append((await reader.readexactly(size + 2))[:-2])
            if len(parts) % 8 == 0:
                await asyncio.sleep(0.01)
        writer.close()
        return b"".join(parts)

    assert asyncio.run(read_slowly()) == BIG_BODY


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("", b"127.0.0.1 http"),
        ("x-forwarded-for: 203.0.113.9\r\nx-forwarded-proto: https\r\n", b"203.0.113.9 https"),
        ("x-forwarded-proto: gopher\r\n", b"127.0.0.1 http"),
    ],
)
def test_a_trusted_proxy_s_forwarded_headers_set_the_client(
    address: Any, extra: str, expected: bytes
) -> None:
    """uvicorn's proxy-header handling (on by default, trusting 127.0.0.1) still applies."""
    with connection(address) as (sock, f):
        sock.sendall(request("GET", "/client", extra=extra))
        assert read_response(f)[2] == expected


def _uvicorn_forwarded(scope: dict[str, Any], trusted: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(scope)

    asyncio.run(ProxyHeadersMiddleware(inner, trusted_hosts=trusted)(dict(scope), None, None))  # type: ignore[arg-type]
    return seen


@pytest.mark.parametrize("trusted", ["127.0.0.1", "*", "10.0.0.0/8", "192.168.1.1"])
@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"x-forwarded-for", b"203.0.113.9")],
        [(b"x-forwarded-for", b"203.0.113.9, 10.0.0.2")],
        [(b"x-forwarded-for", b"203.0.113.9"), (b"x-forwarded-for", b"10.1.1.1")],
        [(b"x-forwarded-for", b"")],
        [(b"x-forwarded-for", b"[2001:db8::1]:4711")],
        [(b"x-forwarded-proto", b" https ")],
        [(b"x-forwarded-proto", b"wss"), (b"x-forwarded-for", b"198.51.100.1:8080")],
        [(b"x-forwarded-proto", b"ftp")],
    ],
)
@pytest.mark.parametrize("client", [("127.0.0.1", 5000), ("10.0.0.2", 5000), None])
def test_forwarded_matches_uvicorn_s_proxy_headers_middleware(
    trusted: str, headers: list[tuple[bytes, bytes]], client: tuple[str, int] | None
) -> None:
    scope = {"type": "http", "client": client, "scheme": "http", "headers": headers}
    ours = dict(scope)
    forwarded(ours, ProxyHeadersMiddleware(app, trusted_hosts=trusted).trusted_hosts)
    theirs = _uvicorn_forwarded(scope, trusted)
    assert (ours["client"], ours["scheme"]) == (theirs["client"], theirs["scheme"])
