"""What every connection of one server shares (`server/http1.py`): the app it calls, the scope
it makes, the limits and the registry of open connections.

Two of uvicorn's layers are done here instead of as ASGI wrappers, because a wrapper's frame is
held for a stream's whole life and crossed on every resume of the request's task:

- uvicorn's `ProxyHeadersMiddleware` (`proxy_headers`, on by default): `forwarded` rewrites the
  scope's client and scheme from `X-Forwarded-For` / `X-Forwarded-Proto` as the middleware does,
  for the same trusted addresses (`FORWARDED_ALLOW_IPS`), as the scope is made;
- an app may name what serves its HTTP requests (`http_entry()`): the gateway's app names its
  front door (`server/app.py`), so FastAPI's own `__call__` is not a layer for those either.
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import TYPE_CHECKING, Any

import httptools
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.flow_control import service_unavailable

from ki2api.server.connections import ConnectionLimits, Registry

if TYPE_CHECKING:
    from ki2api.server.http1 import GatewayProtocol

__all__ = ["Shared", "forwarded"]

_error_log = logging.getLogger("uvicorn.error")
_SCHEMES = frozenset({"http", "https", "ws", "wss"})


def forwarded(scope: dict[str, Any], trusted: Any) -> None:
    """uvicorn's `ProxyHeadersMiddleware` on one HTTP scope: a trusted peer's
    `X-Forwarded-Proto` sets the scheme, its `X-Forwarded-For` the client."""
    client = scope["client"]
    if (client[0] if client else None) not in trusted:
        return
    proto: bytes | None = None
    addresses: list[bytes] = []
    for name, value in scope["headers"]:
        if name == b"x-forwarded-proto":
            proto = value
        elif name == b"x-forwarded-for":
            addresses.append(value)
    if proto is not None:
        scheme = proto.decode("latin1").strip()
        if scheme in _SCHEMES:
            scope["scheme"] = scheme
    if addresses:
        host, port = trusted.get_trusted_client_address(b", ".join(addresses).decode("latin1"))
        if host:  # an empty X-Forwarded-For leaves the client as it is
            scope["client"] = (host, port)


class Shared:
    """What every connection of one uvicorn server shares (one per `ServerState`), so that a
    connection keeps none of it: the application, the server's settings, the limits."""

    __slots__ = (
        "access_log",
        "addresses",
        "access_logger",
        "app",
        "app_state",
        "asgi",
        "limit_concurrency",
        "limits",
        "registry",
        "reset_contextvars",
        "root_path",
        "server_state",
        "trusted",
    )

    def __init__(
        self, config: Any, app_state: dict[str, Any], server_state: Any, limits: ConnectionLimits
    ) -> None:
        app = config.loaded_app
        self.trusted: Any = None  # uvicorn's proxy-header trust, applied as the scope is made
        if isinstance(app, ProxyHeadersMiddleware):
            self.trusted, app = app.trusted_hosts, app.app
        entry = getattr(app, "http_entry", None)
        self.app = entry() if callable(entry) else app
        self.app_state = app_state
        self.server_state = server_state
        self.root_path: str = config.root_path
        self.asgi = {"version": config.asgi_version, "spec_version": "2.3"}
        self.limit_concurrency: int | None = config.limit_concurrency
        self.reset_contextvars = bool(getattr(config, "reset_contextvars", False))
        self.access_logger = logging.getLogger("uvicorn.access")
        self.access_log = self.access_logger.hasHandlers()
        self.limits = limits
        self.addresses: dict[tuple[str, int], tuple[str, int]] = {}
        self.registry = Registry(limits.max_connections)

    def scope(self, conn: GatewayProtocol, method: str, http_version: str) -> dict[str, Any]:
        """A request's ASGI scope, made in one piece (a dict grown key by key is resized
        twice and kept at its larger size for the request's life)."""
        url = httptools.parse_url(conn.url)
        raw_path: bytes = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        root = self.root_path
        scope = {
            "type": "http",
            "asgi": self.asgi,
            "http_version": http_version,
            "server": conn.server,
            "client": conn.client,
            "scheme": conn.scheme,
            "root_path": root,
            "method": method,
            "path": root + path if root else path,
            "raw_path": root.encode("ascii") + raw_path if root else raw_path,
            "query_string": url.query or b"",
            "headers": conn.headers,
            "state": self.app_state.copy() if self.app_state else {},
        }
        if self.trusted is not None:
            forwarded(scope, self.trusted)
        return scope

    def local_address(self, address: Any) -> tuple[str, int] | None:
        """The server's address of a connection, one tuple per address for them all."""
        if address is None:
            return None
        key = (address[0], address[1])
        return self.addresses.setdefault(key, key)

    def app_for(self, conn: GatewayProtocol) -> Any:
        limit = self.limit_concurrency
        state = self.server_state
        if limit is not None and (len(state.connections) >= limit or len(state.tasks) >= limit):
            _error_log.warning("Exceeded concurrency limit.")
            return service_unavailable
        return self.app
