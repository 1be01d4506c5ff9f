"""Address classification (the SSRF policy) and magic-byte sniffing: pure, table-driven."""

from __future__ import annotations

import base64
import ipaddress

import pytest

from ki2api.images.fetch import address_problem
from ki2api.images.sniff import sniff_media_type
from tests.support.payloads import PNG_1X1

ADDRESSES = [
    ("v4-public", "93.184.216.34", None),
    ("v4-public-dns", "8.8.8.8", None),
    ("v4-loopback", "127.0.0.1", "loopback"),
    ("v4-loopback-other", "127.255.0.7", "loopback"),
    ("v4-private-10", "10.0.0.1", "private"),
    ("v4-private-172", "172.16.5.4", "private"),
    ("v4-private-192", "192.168.1.1", "private"),
    ("v4-link-local-metadata", "169.254.169.254", "link-local"),
    ("v4-unspecified", "0.0.0.0", "unspecified"),
    ("v4-this-network", "0.1.2.3", "private"),
    ("v4-cgnat", "100.64.0.1", "non-public"),
    ("v4-multicast", "224.0.0.1", "multicast"),
    ("v4-broadcast", "255.255.255.255", "private"),
    ("v4-reserved", "240.0.0.1", "private"),
    ("v4-documentation", "203.0.113.9", "private"),
    ("v6-public", "2606:4700:4700::1111", None),
    ("v6-loopback", "::1", "loopback"),
    ("v6-unspecified", "::", "unspecified"),
    ("v6-link-local", "fe80::1", "link-local"),
    ("v6-unique-local", "fd00::1", "private"),
    ("v6-multicast", "ff02::1", "multicast"),
    ("v6-documentation", "2001:db8::1", "private"),
    ("v6-mapped-loopback", "::ffff:127.0.0.1", "loopback"),
    ("v6-mapped-private", "::ffff:10.1.2.3", "private"),
    ("v6-mapped-metadata", "::ffff:169.254.169.254", "link-local"),
    ("v6-mapped-public", "::ffff:93.184.216.34", None),
    ("v6-6to4-private", "2002:c0a8:0101::1", "private"),
    ("v6-6to4-loopback", "2002:7f00:0001::1", "loopback"),
    ("v6-nat64-private", "64:ff9b::a00:1", "private"),
    ("v6-nat64-public", "64:ff9b::5db8:d822", None),
    ("v6-teredo", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "private"),
]


@pytest.mark.parametrize(
    ("text", "expected"), [a[1:] for a in ADDRESSES], ids=[a[0] for a in ADDRESSES]
)
def test_address_problem(text: str, expected: str | None) -> None:
    assert address_problem(ipaddress.ip_address(text)) == expected


PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452")
SNIFF = [
    ("png", PNG, "image/png"),
    ("png-real", base64.b64decode(PNG_1X1)[:12], "image/png"),
    ("jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
    ("gif87", b"GIF87a\x01\x00\x01\x00", "image/gif"),
    ("gif89", b"GIF89a\x01\x00\x01\x00", "image/gif"),
    ("webp", b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
    ("riff-not-webp", b"RIFF\x24\x00\x00\x00WAVEfmt ", None),
    ("webp-short", b"RIFF\x24\x00\x00\x00WEB", None),
    ("png-truncated", PNG[:7], None),
    ("html", b"<!doctype html>", None),
    ("svg", b"<svg xmlns=", None),
    ("bmp", b"BM6\x00\x00\x00", None),
    ("tiff", b"II*\x00\x08\x00", None),
    ("empty", b"", None),
]


@pytest.mark.parametrize(("head", "expected"), [s[1:] for s in SNIFF], ids=[s[0] for s in SNIFF])
def test_sniff_media_type(head: bytes, expected: str | None) -> None:
    assert sniff_media_type(head) == expected
