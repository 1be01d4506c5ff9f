"""`ImageFetcher` against real local HTTP(S) servers on 127.0.0.1.

No request ever leaves loopback: test host names resolve through the injected resolver, either
to 127.0.0.1 (with `allow_private=True`) or to addresses the policy refuses before connecting;
the "public" addresses are only reached through `LoopbackForwarder`, which records the address
a request was aimed at and delivers it to the local server instead.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
import pytest
import trustme
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.images.fetch import ImageFetcher, Resolver, system_resolver
from tests.support.payloads import PNG_1X1
from tests.support.servers import serve_in_thread

PNG = base64.b64decode(PNG_1X1)
LIMIT = 1000
PUBLIC_IP = "93.184.216.34"


class ImageServer:
    """A small image host that records the path and Host header of every request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.app = Starlette(routes=[Route("/{name:path}", self.serve)])

    async def serve(self, request: Request) -> Response:
        self.seen.append((request.url.path, request.headers.get("host", "")))
        name = request.path_params["name"]
        if name.startswith("redirect/"):
            left = int(name.rpartition("/")[2])
            target = f"/redirect/{left - 1}" if left > 1 else "/png"
            return RedirectResponse(target, status_code=302)
        if name == "redirect-to":
            return RedirectResponse(request.query_params["to"], status_code=307)
        if name == "slow":
            await asyncio.sleep(1.5)
        return ROUTES.get(name, lambda: Response(status_code=404))()


def _big_stream() -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        yield PNG
        for _ in range(LIMIT // 100 + 1):
            yield b"\0" * 100

    return StreamingResponse(chunks(), media_type="image/png")


ROUTES: dict[str, Any] = {
    "png": lambda: Response(PNG, media_type="image/png"),
    "slow": lambda: Response(PNG, media_type="image/png"),
    "png-as-jpeg": lambda: Response(PNG, media_type="image/jpeg"),
    "octet": lambda: Response(PNG, media_type="application/octet-stream"),
    "no-type": lambda: Response(PNG),
    "html": lambda: Response(b"<html></html>", media_type="text/html"),
    "svg": lambda: Response(b"<svg></svg>", media_type="image/svg+xml"),
    "fake-png": lambda: Response(b"hello, world", media_type="image/png"),
    "gzip": lambda: Response(PNG, media_type="image/png", headers={"content-encoding": "gzip"}),
    "big": lambda: Response(PNG + b"\0" * LIMIT, media_type="image/png"),
    "big-stream": _big_stream,
}


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[ImageServer, str]]:
    images = ImageServer()
    with serve_in_thread(images.app) as url:
        yield images, url


@pytest.fixture
def images(server: tuple[ImageServer, str]) -> ImageServer:
    server[0].seen.clear()
    return server[0]


@pytest.fixture
def base(server: tuple[ImageServer, str]) -> str:
    return server[1]


@pytest.fixture
def port(base: str) -> int:
    return int(base.rpartition(":")[2])


def table(mapping: dict[str, Sequence[str]], calls: list[str] | None = None) -> Resolver:
    async def resolve(host: str) -> Sequence[str]:
        if calls is not None:
            calls.append(host)
        if host not in mapping:
            raise OSError("no such host")
        return mapping[host]

    return resolve


class LoopbackForwarder(httpx.AsyncBaseTransport):
    """Records (host aimed at, Host header) and delivers each request to the local server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.aimed: list[tuple[str, str]] = []
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.aimed.append((request.url.host, request.headers["host"]))
        request.url = request.url.copy_with(host="127.0.0.1", port=self.port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def refused(fetcher: ImageFetcher, url: str) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        await fetcher.fetch(url, param="messages.0.content.1.image_url")
    err = info.value
    assert err.kind is ErrorKind.INVALID_REQUEST
    assert err.param == "messages.0.content.1.image_url"
    return err


def local(**kwargs: Any) -> ImageFetcher:
    return ImageFetcher(allow_private=True, max_bytes=LIMIT, **kwargs)


# --- happy paths -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["png", "png-as-jpeg", "octet", "no-type"])
async def test_fetches_png_and_trusts_the_bytes(images: ImageServer, base: str, path: str) -> None:
    image = await local().fetch(f"{base}/{path}")
    assert (image.media_type, base64.b64decode(image.data_b64)) == ("image/png", PNG)
    assert images.seen == [(f"/{path}", base.removeprefix("http://"))]


async def test_host_name_resolved_then_sent_as_host_header(images: ImageServer, port: int) -> None:
    calls: list[str] = []
    fetcher = local(resolver=table({"images.test": ["127.0.0.1"]}, calls))
    image = await fetcher.fetch(f"http://images.test:{port}/png")
    assert image.media_type == "image/png"
    assert calls == ["images.test"]
    assert images.seen == [("/png", f"images.test:{port}")]


async def test_follows_three_redirects(images: ImageServer, base: str) -> None:
    image = await local().fetch(f"{base}/redirect/3")
    assert image.media_type == "image/png"
    assert [p for p, _ in images.seen] == [
        "/redirect/3",
        "/redirect/2",
        "/redirect/1",
        "/png",
    ]


# --- refusals of what comes back ---------------------------------------------------------------

REFUSALS = [
    ("html", "html", "'text/html', not an image", "invalid_image_format"),
    ("svg", "svg", "not a PNG, JPEG, GIF or WebP", "invalid_image_format"),
    ("fake-png", "fake-png", "not a PNG, JPEG, GIF or WebP", "invalid_image_format"),
    ("not-found", "nothing-here", "answered HTTP 404", "invalid_image_url"),
    ("compressed", "gzip", "compressed", "invalid_image_url"),
    ("too-large-declared", "big", f"larger than the limit of {LIMIT}", "invalid_image_url"),
    ("too-large-streamed", "big-stream", f"larger than the limit of {LIMIT}", "invalid_image_url"),
    ("too-many-redirects", "redirect/4", "more than 3 redirects", "invalid_image_url"),
    ("redirect-to-ftp", "redirect-to?to=ftp://x/y.png", "non-http(s)", "invalid_image_url"),
]


@pytest.mark.parametrize(
    ("path", "needle", "code"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
async def test_refuses(images: ImageServer, base: str, path: str, needle: str, code: str) -> None:
    err = await refused(local(), f"{base}/{path}")
    assert needle in err.message
    assert err.code == code


async def test_time_limit_covers_the_whole_fetch(images: ImageServer, base: str) -> None:
    err = await refused(local(timeout_s=0.2), f"{base}/slow")
    assert "within 0.2 s" in err.message


async def test_connection_refused_is_a_400() -> None:
    from tests.support.servers import free_port

    err = await refused(local(), f"http://127.0.0.1:{free_port()}/png")
    assert "could not connect to the image host (ConnectError)" in err.message


BAD_URLS = [
    ("ftp", "ftp://example.com/a.png", "http(s) URLs"),
    ("no-host", "http:///a.png", "http(s) URLs with a host"),
    ("bad-ipv6", "http://[::1/a.png", "Invalid image URL"),
    ("bad-port", "http://images.test:abc/a.png", "Invalid image URL"),
]


@pytest.mark.parametrize(("url", "needle"), [b[1:] for b in BAD_URLS], ids=[b[0] for b in BAD_URLS])
async def test_bad_urls(url: str, needle: str) -> None:
    assert needle in (await refused(ImageFetcher(resolver=table({})), url)).message


async def test_unresolvable_host() -> None:
    err = await refused(ImageFetcher(resolver=table({})), "http://nowhere.test/a.png")
    assert "does not resolve" in err.message


# --- the address policy: refused before any connection ----------------------------------------


async def test_loopback_literal_refused_without_connecting(images: ImageServer, base: str) -> None:
    err = await refused(ImageFetcher(), f"{base}/png")
    assert "loopback address" in err.message
    assert images.seen == []


PRIVATE = [
    ("private-v4", ["10.0.0.1"], "private"),
    ("metadata", ["169.254.169.254"], "link-local"),
    ("loopback-v6", ["::1"], "loopback"),
    ("mapped-loopback", ["::ffff:127.0.0.1"], "loopback"),
    ("public-and-private", [PUBLIC_IP, "192.168.0.10"], "private"),
]


@pytest.mark.parametrize(("ips", "kind"), [p[1:] for p in PRIVATE], ids=[p[0] for p in PRIVATE])
async def test_private_addresses_refused_without_connecting(
    images: ImageServer, port: int, ips: list[str], kind: str
) -> None:
    forwarder = LoopbackForwarder(port)
    fetcher = ImageFetcher(resolver=table({"internal.test": ips}), transport=forwarder)
    err = await refused(fetcher, "http://internal.test/png")
    assert f"a {kind} address" in err.message
    assert forwarder.aimed == [] and images.seen == []


async def test_public_address_connects_to_the_checked_ip(images: ImageServer, port: int) -> None:
    calls: list[str] = []
    answers = iter([[PUBLIC_IP], ["127.0.0.1"]])  # a rebinding resolver: second answer internal

    async def rebinding(host: str) -> list[str]:
        calls.append(host)
        return next(answers)

    forwarder = LoopbackForwarder(port)
    fetcher = ImageFetcher(resolver=rebinding, transport=forwarder)
    image = await fetcher.fetch("http://images.example/png")
    assert image.media_type == "image/png"
    assert calls == ["images.example"]
    assert forwarder.aimed == [(PUBLIC_IP, "images.example")]
    assert images.seen == [("/png", "images.example")]


REDIRECTS = [
    ("to-metadata-name", "http://metadata.test/latest", "link-local"),
    ("to-loopback-literal", "http://127.0.0.1/png", "loopback"),
    ("to-mapped-literal", "http://[::ffff:10.0.0.1]/png", "private"),
]


@pytest.mark.parametrize(("to", "kind"), [r[1:] for r in REDIRECTS], ids=[r[0] for r in REDIRECTS])
async def test_redirect_targets_are_checked(
    images: ImageServer, port: int, to: str, kind: str
) -> None:
    forwarder = LoopbackForwarder(port)
    resolver = table({"images.example": [PUBLIC_IP], "metadata.test": ["169.254.169.254"]})
    fetcher = ImageFetcher(resolver=resolver, transport=forwarder)
    err = await refused(fetcher, f"http://images.example/redirect-to?to={to}")
    assert f"a {kind} address" in err.message
    assert forwarder.aimed == [(PUBLIC_IP, "images.example")]
    assert len(images.seen) == 1


async def test_system_resolver_reads_localhost() -> None:
    assert {"127.0.0.1", "::1"} & set(await system_resolver("localhost"))


# --- https: the IP is pinned, the name is still verified --------------------------------------


class TlsImageServer:
    """A one-response-per-connection HTTPS server recording SNI names and request heads."""

    def __init__(self, ca: trustme.CA, name: str) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(name).configure_cert(self.context)
        self.context.sni_callback = self._sni
        self.sni: list[str | None] = []
        self.heads: list[bytes] = []

    def _sni(self, sock: Any, name: str | None, ctx: Any) -> None:
        self.sni.append(name)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.heads.append(await reader.readuntil(b"\r\n\r\n"))
            head = f"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {len(PNG)}\r\n"
            writer.write(head.encode() + b"Connection: close\r\n\r\n" + PNG)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.mark.parametrize(("cert_name", "ok"), [("images.test", True), ("other.test", False)])
async def test_https_pins_the_ip_and_verifies_the_name(cert_name: str, ok: bool) -> None:
    ca = trustme.CA()
    tls = TlsImageServer(ca, cert_name)
    server = await asyncio.start_server(tls.handle, "127.0.0.1", 0, ssl=tls.context)
    port = server.sockets[0].getsockname()[1]
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    fetcher = local(resolver=table({"images.test": ["127.0.0.1"]}), ssl_context=client_context)
    url = f"https://images.test:{port}/a.png"
    try:
        if ok:
            image = await fetcher.fetch(url)
            assert image.media_type == "image/png"
            assert tls.heads[0].startswith(b"GET /a.png HTTP/1.1\r\n")
            assert f"\r\nhost: images.test:{port}\r\n".encode() in tls.heads[0].lower()
        else:
            err = await refused(fetcher, url)
            assert "ConnectError" in err.message
            assert tls.heads == []
        assert tls.sni == ["images.test"]
    finally:
        server.close()
        await server.wait_closed()


# --- host names the IDNA codec refuses: a 400, never a 500 (issue 9) --------------------------


@pytest.mark.parametrize(
    "url", ["http://" + "a" * 64 + ".example/a.png", "http://a..example/a.png"], ids=["64", "empty"]
)
async def test_host_labels_idna_refuses(url: str) -> None:
    err = await refused(ImageFetcher(), url)  # the system resolver: no query is ever sent
    assert "does not resolve" in err.message


@pytest.mark.parametrize(
    "to", ["http://xn--a/png", "http://" + "b" * 64 + ".example/png"], ids=["punycode", "64"]
)
async def test_redirects_to_host_names_idna_refuses(
    images: ImageServer, port: int, to: str
) -> None:
    forwarder = LoopbackForwarder(port)
    resolver = table({"images.example": [PUBLIC_IP]})
    fetcher = ImageFetcher(resolver=resolver, transport=forwarder)
    err = await refused(fetcher, f"http://images.example/redirect-to?to={to}")
    assert "invalid host name" in err.message or "does not resolve" in err.message
