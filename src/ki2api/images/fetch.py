"""Fetch a remote image for a client, safely: the one outbound request a client can aim.

The policy (docs/images.md):

* only `http` and `https` URLs; the host is resolved first and every address it resolves to
  must be public: private, loopback, link-local, multicast, reserved, unspecified and shared
  (CGNAT) addresses are refused, also when embedded in an IPv6 address (IPv4-mapped, 6to4,
  NAT64), unless `allow_private`;
* the connection goes to the address that was checked (the IP is pinned in the request URL; the
  original name is sent as `Host` and, for https, as the TLS SNI name, and the certificate is
  verified against that name), so a second DNS answer cannot redirect it (DNS rebinding);
* redirects are followed by hand, at most `max_redirects`, each target checked the same way;
* no proxy from the environment (the gateway checks the address it connects to itself), no
  connection reuse between fetches, `Accept-Encoding: identity` and no decompression;
* the body is capped at `max_bytes` (declared `Content-Length` and bytes actually read) and the
  whole fetch, DNS and redirects included, at `timeout_s`;
* the result must be a PNG, JPEG, GIF or WebP by its magic bytes; the `Content-Type` must be
  one of those, a generic binary type or absent. The bytes decide the media type.

Every refusal is an INVALID_REQUEST (400) naming the caller's `param`.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias

import certifi
import httpx

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.messages import ImagePart
from ki2api.http_client import map_transport_errors
from ki2api.images.sniff import SNIFF_BYTES, sniff_media_type

__all__ = ["IPAddress", "ImageFetcher", "Resolver", "address_problem", "system_resolver"]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver: TypeAlias = Callable[[str], Awaitable[Sequence[str]]]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
_URL_CODE = "invalid_image_url"
_FORMAT_CODE = "invalid_image_format"


def address_problem(ip: IPAddress) -> str | None:
    """Why the gateway must not connect to `ip` ("loopback", "private", ...), None if public."""
    if isinstance(ip, ipaddress.IPv6Address):
        translated = ip.ipv4_mapped or (_nat64_ipv4(ip) if ip in _NAT64 else None)
        if translated is not None:  # a connection to it is one to that IPv4 address
            return address_problem(translated)
        if ip.sixtofour is not None and (problem := address_problem(ip.sixtofour)) is not None:
            return problem
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    )
    for name, bad in checks:
        if bad:
            return name
    return None if ip.is_global else "non-public"


def _nat64_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)


async def system_resolver(host: str) -> list[str]:
    """The addresses the system resolver gives for `host` (the event loop's getaddrinfo)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class ImageFetcher:
    """Fetches one image per `fetch()` call; holds no connections between calls."""

    def __init__(
        self,
        *,
        max_bytes: int = 5 * 1024 * 1024,
        timeout_s: float = 10.0,
        allow_private: bool = False,
        resolver: Resolver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_redirects: int = 3,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.allow_private = allow_private
        self.max_redirects = max_redirects
        self._resolve = resolver or system_resolver
        self._transport = transport
        self._ssl = ssl_context  # None: the certifi CA bundle, loaded on first use

    async def fetch(self, url: str, *, param: str | None = None) -> ImagePart:
        """The image at `url`, or an INVALID_REQUEST naming `param`."""
        try:
            async with asyncio.timeout(self.timeout_s):
                with map_transport_errors("the image host"):
                    return await self._fetch(_parse(url, param), param)
        except TimeoutError:
            raise _invalid(
                f"Could not fetch the image: no complete answer within {self.timeout_s:g} s.",
                param,
            ) from None
        except GatewayError as err:
            if err.kind is ErrorKind.INVALID_REQUEST:
                raise
            # a network failure (the shared httpx table): the image is the client's, so is
            # the failure
            raise _invalid(f"Could not fetch the image: {err.message}.", param) from None
        except (UnicodeError, httpx.InvalidURL):  # a host name IDNA refuses (label > 63...)
            raise _invalid(
                "Could not fetch the image: its URL (or a redirect's) has an invalid host name.",
                param,
            ) from None

    async def _fetch(self, url: httpx.URL, param: str | None) -> ImagePart:
        async with self._client() as client:
            for _ in range(self.max_redirects + 1):
                ip = await self._checked_address(url, param)
                request = _pinned_request(client, url, ip)
                response = await client.send(request, stream=True)
                try:
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        url = _redirect_target(url, response.headers["location"], param)
                        continue
                    return await self._read_image(response, param)
                finally:
                    await response.aclose()
        raise _invalid(
            f"Could not fetch the image: more than {self.max_redirects} redirects.", param
        )

    def _client(self) -> httpx.AsyncClient:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=certifi.where())
        return httpx.AsyncClient(
            transport=self._transport,
            verify=self._ssl,
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(self.timeout_s),
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def _checked_address(self, url: httpx.URL, param: str | None) -> IPAddress:
        """The address to connect to: the literal, or the first the host resolves to.

        Every resolved address must pass (a name that also resolves to an internal address is
        refused), so the answer does not depend on which address a client happens to use.
        """
        host = url.raw_host.decode("ascii")
        literal = _ip_or_none(host)
        if literal is not None:
            addresses = [literal]
        else:
            try:
                found = await self._resolve(host)
            except (OSError, UnicodeError):  # UnicodeError: a label over 63 characters, or empty
                found = []
            addresses = [ip for ip in map(_ip_or_none, found) if ip is not None]
            if not addresses:
                raise _invalid("Could not fetch the image: its host name does not resolve.", param)
        if not self.allow_private:
            for ip in addresses:
                if (problem := address_problem(ip)) is not None:
                    raise _invalid(
                        f"The image URL points to a {problem} address; this gateway only "
                        "fetches images from public internet addresses.",
                        param,
                    )
        return addresses[0]

    async def _read_image(self, response: httpx.Response, param: str | None) -> ImagePart:
        if response.status_code != 200:
            raise _invalid(
                f"Could not fetch the image: the server answered HTTP {response.status_code}.",
                param,
            )
        _check_headers(response.headers, self.max_bytes, param)
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > self.max_bytes:
                raise _too_large(self.max_bytes, param)
        media_type = sniff_media_type(bytes(body[:SNIFF_BYTES]))
        if media_type is None:
            raise _invalid(
                "The fetched file is not a PNG, JPEG, GIF or WebP image.", param, _FORMAT_CODE
            )
        return ImagePart(media_type=media_type, data_b64=base64.b64encode(body).decode("ascii"))


def _parse(url: str, param: str | None) -> httpx.URL:
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, ValueError):
        raise _invalid("Invalid image URL.", param) from None
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise _invalid("Image URLs must be http(s) URLs with a host.", param)
    return parsed


def _redirect_target(current: httpx.URL, location: str, param: str | None) -> httpx.URL:
    try:
        target = current.join(location)
    except (httpx.InvalidURL, ValueError):
        raise _invalid(
            "Could not fetch the image: it redirects to an invalid URL.", param
        ) from None
    if target.scheme not in ("http", "https") or not target.raw_host:
        raise _invalid("Could not fetch the image: it redirects to a non-http(s) URL.", param)
    return target


def _pinned_request(client: httpx.AsyncClient, url: httpx.URL, ip: IPAddress) -> httpx.Request:
    """A GET to `ip` itself that still names the original host (Host header, TLS SNI)."""
    host_header = url.netloc.decode("ascii").rpartition("@")[2]
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
    return client.build_request(
        "GET",
        url.copy_with(host=str(ip)),
        headers={"Host": host_header, "Accept": "image/*", "Accept-Encoding": "identity"},
        extensions=extensions,
    )


def _check_headers(headers: httpx.Headers, max_bytes: int, param: str | None) -> None:
    declared = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if declared not in _GENERIC_TYPES and not declared.startswith("image/"):
        raise _invalid(f"The image URL returned {declared!r}, not an image.", param, _FORMAT_CODE)
    if headers.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
        raise _invalid("The image server sent a compressed body; images must be sent as is.", param)
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise _too_large(max_bytes, param)


def _ip_or_none(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _too_large(max_bytes: int, param: str | None) -> GatewayError:
    return _invalid(f"The image is larger than the limit of {max_bytes} bytes.", param)


def _invalid(message: str, param: str | None, code: str = _URL_CODE) -> GatewayError:
    return GatewayError(ErrorKind.INVALID_REQUEST, message, param=param, code=code)
