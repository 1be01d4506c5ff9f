"""Bounded client connections: read deadlines per phase and a cap on open connections.

uvicorn closes a keep-alive connection that stays silent between two requests, and nothing else:
a connection that never sends a byte, one that sends its head a byte at a time (slowloris) or
a body that trickles in, stays open for ever, and enough of them exhaust the file descriptors.
`BoundedHttpToolsProtocol` is uvicorn's httptools protocol plus one timer per phase:

- idle   (after accept, and after a response on a keep-alive connection): nothing arrives for
  `idle_timeout_s` -> the connection is closed (silently: no request is pending).
- head   (from the first byte of a request to the end of its headers): `header_timeout_s` ->
  `408 Request Timeout` with `Connection: close`.
- body   (from the end of the headers to the end of the body): `body_timeout_s` plus one second
  per `BODY_MIN_RATE` bytes the request declares -> `408` if no response has started, and the
  application's next `receive()` returns `http.disconnect`.
- answering: no deadline. Writing a response (a long, mostly silent stream) is never timed.

At most `max_connections` connections are open per process. A connection that would exceed
the cap first evicts the connection that has been idle (or reading a head) the longest, so an
idle flood cannot lock out a real client (`/health` keeps answering); when every connection is
busy with a request, the newcomer gets a `503` with `Connection: close` without being read.

The limits come from `Settings` (`protocol_for(settings)`); `ki2api serve --workers N` names
`BoundedHttpToolsProtocol` by its import string and each worker reads them from the
environment, as it does every other setting.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ki2api.settings import Settings, load_settings

if sys.platform != "win32":  # Windows has no descriptor limit of this kind (start.ps1 runs there)
    import resource

__all__ = [
    "BODY_MIN_RATE",
    "FD_RESERVE",
    "IMPORT_STRING",
    "BoundedHttpToolsProtocol",
    "ConnectionLimits",
    "body_deadline_s",
    "connection_cap",
    "protocol_for",
    "raise_fd_limit",
]

IMPORT_STRING = "ki2api.server.connections:BoundedHttpToolsProtocol"
BODY_MIN_RATE = 64 * 1024  # bytes per second a declared body earns on top of body_timeout_s
FD_RESERVE = 64  # descriptors kept for the store, logs, listeners and token refreshes
_REFUSAL_LOG_EVERY_S = 60.0

log = logging.getLogger("ki2api.connections")

_TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)
_BUSY_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
)


def _error_bytes(template: bytes, kind: str, code: str, message: str) -> bytes:
    """A JSON error readable by both dialects: Anthropic's `{"type": "error", "error": {...}}`
    with OpenAI's `message` / `type` / `code` inside (the path is unknown before the head)."""
    error = {"type": kind, "code": code, "param": None, "message": message}
    body = json.dumps({"type": "error", "error": error}, separators=(",", ":")).encode()
    return template % (len(body), body)


HEAD_TIMEOUT_RESPONSE = _error_bytes(
    _TIMEOUT_408, "timeout_error", "request_timeout", "The request was not received in time."
)
BUSY_RESPONSE = _error_bytes(
    _BUSY_503,
    "overloaded_error",
    "too_many_connections",
    "The gateway has too many open connections; retry shortly.",
)


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    idle_timeout_s: float = 30.0
    max_connections: int = 1024
    max_body_bytes: int = 16 * 1024 * 1024  # a larger declared body earns no more time

    @classmethod
    def from_settings(cls, settings: Settings, *, fd_limit: int | None = None) -> ConnectionLimits:
        soft = fd_limit if fd_limit is not None else _soft_fd_limit()
        return cls(
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            idle_timeout_s=settings.idle_timeout_s,
            max_connections=connection_cap(settings.max_client_connections, soft),
            max_body_bytes=settings.max_body_bytes,
        )


def connection_cap(wanted: int, fd_soft_limit: int) -> int:
    """The cap actually used: the setting, but below what the descriptors allow. A busy client
    connection can hold an upstream connection too, hence two descriptors each."""
    return max(1, min(wanted, (fd_soft_limit - FD_RESERVE) // 2))


def body_deadline_s(limits: ConnectionLimits, declared_bytes: int) -> float:
    """Seconds a request body may take: the base deadline plus its size at BODY_MIN_RATE."""
    counted = min(max(0, declared_bytes), limits.max_body_bytes)
    return limits.body_timeout_s + counted / BODY_MIN_RATE


def _soft_fd_limit() -> int:
    if sys.platform == "win32":
        return 1 << 20
    else:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        return soft if soft != resource.RLIM_INFINITY else 1 << 20


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (where allowed); the soft limit after."""
    if sys.platform != "win32":
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != soft:
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            except (ValueError, OSError):  # e.g. macOS refuses more than OPEN_MAX
                pass
    return _soft_fd_limit()


class _Registry:
    """The open connections of one uvicorn server, and which of them may be evicted (idle or
    reading a head), oldest first."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open: set[BoundedHttpToolsProtocol] = set()
        self.evictable: dict[BoundedHttpToolsProtocol, None] = {}  # insertion order = age
        self.last_refusal_log = 0.0

    def admit(self, conn: BoundedHttpToolsProtocol) -> bool:
        while len(self.open) >= self.cap and self.evictable:
            victim = next(iter(self.evictable))
            self.forget(victim)
            victim.evict()
        if len(self.open) >= self.cap:
            return False
        self.open.add(conn)
        return True

    def forget(self, conn: BoundedHttpToolsProtocol) -> None:
        self.open.discard(conn)
        self.evictable.pop(conn, None)

    def set_evictable(self, conn: BoundedHttpToolsProtocol, evictable: bool) -> None:
        if not evictable:
            self.evictable.pop(conn, None)
        elif conn in self.open and conn not in self.evictable:
            self.evictable[conn] = None


_registries: weakref.WeakKeyDictionary[Any, _Registry] = weakref.WeakKeyDictionary()
_env_limits: list[ConnectionLimits] = []


def _limits_from_env() -> ConnectionLimits:
    """`serve --workers N`: a worker builds its limits from the environment once."""
    if not _env_limits:
        _env_limits.append(ConnectionLimits.from_settings(load_settings()))
    return _env_limits[0]


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with read deadlines and the connection cap (see above)."""

    limits: ClassVar[ConnectionLimits | None] = None  # None: from the environment

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = type(self).limits or _limits_from_env()
        registry = _registries.get(self.server_state)
        if registry is None:
            registry = _registries[self.server_state] = _Registry(self._limits.max_connections)
        self._registry = registry
        self._timer: asyncio.TimerHandle | None = None
        self._reading: str | None = None  # "head" / "body" while a request is arriving
        self._refused = False

    # Connection lifecycle

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self._registry.admit(self):
            self._refuse()
            return
        self._become_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._registry.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)

    def handle_websocket_upgrade(self) -> None:
        self._cancel_timer()  # the connection now belongs to the websocket protocol
        self._registry.forget(self)
        super().handle_websocket_upgrade()

    def evict(self) -> None:
        """Closed to make room for a new connection (this one was idle or reading a head)."""
        self._cancel_timer()
        log.debug("closing an idle connection to make room for a new one")
        self._close()

    # Parser callbacks (called from data_received)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading = "head"
        self._arm(self._limits.header_timeout_s, self._head_timed_out)

    def on_headers_complete(self) -> None:
        self._reading = "body"
        self._registry.set_evictable(self, False)
        self._arm(body_deadline_s(self._limits, self._declared_length()), self._body_timed_out)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading = None
        self._cancel_timer()
        if self.cycle is not None and self.cycle.response_complete and not self.pipeline:
            self._become_idle()  # answered before its body was read: the body is in now

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        self._unset_keepalive_if_required()  # our idle timer replaces uvicorn's keep-alive one
        if self.transport.is_closing() or pipelined or self._reading is not None:
            return  # closing, the next request started, or the rest of a request is arriving
        self._become_idle()

    # Timers

    def _become_idle(self) -> None:
        self._registry.set_evictable(self, True)
        self._arm(self._limits.idle_timeout_s, self._idle_timed_out)

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _idle_timed_out(self) -> None:
        self._timer = None
        self._close()

    def _head_timed_out(self) -> None:
        self._timer = None
        log.debug("request head not received within %.1f s", self._limits.header_timeout_s)
        if not self.transport.is_closing():
            self.transport.write(HEAD_TIMEOUT_RESPONSE)
        self._close()

    def _body_timed_out(self) -> None:
        self._timer = None
        log.debug("request body not received in time; closing the connection")
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if not cycle.response_started and not self.transport.is_closing():
                self.transport.write(HEAD_TIMEOUT_RESPONSE)
            # The application sees the disconnect at once and its later writes go nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
        self._close()

    # Helpers

    def _declared_length(self) -> int:
        for name, value in self.headers or ():
            if name == b"content-length":
                return int(value) if value.isdigit() else 0
        return 0

    def _close(self) -> None:
        self._registry.forget(self)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _refuse(self) -> None:
        self._refused = True
        now = time.monotonic()
        if now - self._registry.last_refusal_log >= _REFUSAL_LOG_EVERY_S:
            self._registry.last_refusal_log = now
            log.warning(
                "%d client connections are open and busy (KI2API_MAX_CONNECTIONS): "
                "refusing new ones with 503",
                len(self._registry.open),
            )
        self.transport.write(BUSY_RESPONSE)
        self.transport.close()


def protocol_for(settings: Settings) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for `uvicorn.Config(http=...)` with these settings' limits."""
    limits = ConnectionLimits.from_settings(settings)
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"limits": limits})
