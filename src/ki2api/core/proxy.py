"""Outbound proxy URLs: parsing, checking and showing them without their credentials.

An account's calls to Kiro may leave through a proxy of its own (docs/accounts.md, "Outbound
proxies"): `http://[user:pass@]host:port`, `https://…` (TLS to the proxy itself),
`socks5://[user:pass@]host:port` or `socks5h://…` (the proxy resolves the host name). Pure: no
I/O. A proxy is shown as `scheme://host:port`, never with its user name or password.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

from ki2api.core.errors import ErrorKind, GatewayError

__all__ = [
    "PROXY_FAILED",
    "PROXY_SCHEMES",
    "ProxyURL",
    "ProxyURLError",
    "parse_proxy",
    "proxy_failure",
]

PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
# The GatewayError code of a call that failed at the account's proxy (not at Kiro behind it).
PROXY_FAILED = "proxy_failed"


class ProxyURLError(ValueError):
    """A proxy URL we cannot use; the message says what is wrong, never the password."""


@dataclass(frozen=True)
class ProxyURL:
    scheme: str  # one of PROXY_SCHEMES
    host: str  # a name or an IP address (an IPv6 one without brackets)
    port: int
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @property
    def socks(self) -> bool:
        return self.scheme.startswith("socks")

    @property
    def _hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def masked(self) -> str:
        """What may be shown or logged: scheme://host:port."""
        return f"{self.scheme}://{self._hostport}"

    @property
    def path_key(self) -> str:
        """One network path: the proxy's host and port, and its login (a provider may give
        each login its own exit address). Safe to show: the login is a short hash."""
        if not self.username:
            return self._hostport
        digest = hashlib.sha256(self.username.encode()).hexdigest()[:6]
        return f"{self._hostport}#{digest}"

    @property
    def shown(self) -> str:
        """`masked`, plus a short hash of the login when there is one (never the login)."""
        return self.masked + (
            f" (login {self.path_key.rpartition('#')[2]})" if self.username else ""
        )

    @property
    def url(self) -> str:
        """The full URL with its credentials: for the HTTP client only, never to show."""
        if self.username is None:
            return self.masked
        auth = quote(self.username, safe="")
        if self.password is not None:
            auth += ":" + quote(self.password, safe="")
        return f"{self.scheme}://{auth}@{self._hostport}"

    def __str__(self) -> str:
        return self.masked


def parse_proxy(text: str) -> ProxyURL:
    """A proxy URL, checked: a known scheme, a host, a port 1-65535, nothing after the port.
    ProxyURLError says what is wrong (without repeating a password)."""
    raw = text.strip()
    if "://" not in raw:
        raise ProxyURLError(
            "a proxy URL needs a scheme: http://, https://, socks5:// or socks5h:// "
            "(e.g. socks5://user:pass@127.0.0.1:1080)"
        )
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise ProxyURLError("the proxy URL's port must be a number from 1 to 65535") from None
    scheme = parts.scheme.lower()
    if scheme not in PROXY_SCHEMES:
        raise ProxyURLError(
            f"unsupported proxy scheme {scheme!r}: use http, https, socks5 or socks5h"
        )
    if not parts.hostname:
        raise ProxyURLError("the proxy URL has no host (e.g. http://proxy.example:3128)")
    if port is None:
        raise ProxyURLError("the proxy URL needs a port (e.g. http://proxy.example:3128)")
    if not 1 <= port <= 65535:
        raise ProxyURLError("the proxy URL's port must be a number from 1 to 65535")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ProxyURLError("a proxy URL is scheme://[user:pass@]host:port, with no path")
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is not None and not user:
        raise ProxyURLError("the proxy URL has a password but no user name")
    return ProxyURL(scheme, parts.hostname, port, user or None, password)


def proxy_failure(exc: BaseException, status: int | None = None) -> GatewayError:
    """The error of a call that failed at the account's proxy (unreachable, 407, no tunnel):
    the account's fault (kiro/accounts/policy.py rests it, reason "proxy"); never names the
    proxy (a client may see it) nor its credentials."""
    why = "refused the credentials" if status == 407 else "could not be used"
    detail = type(exc).__name__ + (f", {status}" if status else "")
    return GatewayError(
        ErrorKind.UPSTREAM_UNAVAILABLE,
        f"the account's outbound proxy {why} ({detail})",
        retryable=True,
        code=PROXY_FAILED,
    )
