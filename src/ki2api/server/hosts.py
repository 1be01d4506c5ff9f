"""Network safety: which bind addresses are loopback, and the `Host` check that defends a
loopback-bound gateway against DNS rebinding.

A web page on `http://evil.example` can make a browser resolve `evil.example` to 127.0.0.1 and
send requests to the gateway as if it were the page's own site. The browser still sends
`Host: evil.example`, so a gateway bound to loopback answers only requests naming a loopback
host (`localhost`, `*.localhost`, a loopback IP, with any port) or one listed in
`KI2API_ALLOWED_HOSTS` (a reverse proxy's public name; `*` turns the check off). Anything else
gets 403 in the client's dialect. A gateway bound to another address does not check `Host`:
it is meant to be reached under names we cannot know.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from ki2api.core.errors import ErrorKind, GatewayError

__all__ = ["host_allowed", "host_name", "host_refusal", "is_loopback_host"]


def is_loopback_host(host: str) -> bool:
    """Whether a bind address (or a Host name) can only be reached from this machine."""
    name = host.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name == "localhost" or name.endswith(".localhost"):  # RFC 6761: always loopback
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host of a `Host` header value, without port or IPv6 brackets, lower case."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def host_allowed(header: str | None, extra: Iterable[str]) -> bool:
    """Whether a loopback-bound gateway should answer a request with this `Host` header."""
    allowed = set(extra)
    if "*" in allowed or header is None:  # no Host at all: not a browser (they always send it)
        return True
    name = host_name(header)
    return is_loopback_host(name) or name in allowed


def host_refusal(raw: bytes | None, allowed: tuple[str, ...]) -> GatewayError | None:
    """The 403 of a request whose `Host` header (`raw`) is not allowed (see the module
    docstring), else None."""
    header = raw.decode("latin-1") if raw is not None else None
    if host_allowed(header, allowed):
        return None
    name = host_name(header or "")[:100]
    return GatewayError(
        ErrorKind.PERMISSION,
        f"Host {name!r} is not allowed: this gateway listens on loopback and answers "
        "requests for localhost only. Behind a reverse proxy, add its host name to "
        "KI2API_ALLOWED_HOSTS.",
    )
