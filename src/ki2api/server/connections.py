"""Bounded client connections: the limits, the registry of open connections, the canned answers.

`server/http1.py` (the gateway's HTTP/1.1 protocol) applies them: read deadlines per phase
(idle, head, body; never while answering), a cap on the request head's size, and a cap on open
connections per process that evicts the longest-idle connection first and refuses with a `503`
only when every connection is busy. The limits come from `Settings`
(`ConnectionLimits.from_settings`); a `--workers N` worker reads them from the environment
(`limits_from_env`), as it does every other setting.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Protocol

from ki2api.settings import Settings, load_settings

if sys.platform != "win32":  # Windows has no descriptor limit of this kind (start.ps1 runs there)
    import resource

__all__ = [
    "BODY_MIN_RATE",
    "BUSY_RESPONSE",
    "FD_RESERVE",
    "HEAD_TIMEOUT_RESPONSE",
    "HEAD_TOO_LARGE_RESPONSE",
    "MAX_HEAD_BYTES",
    "ConnectionLimits",
    "Registry",
    "body_deadline_s",
    "connection_cap",
    "limits_from_env",
    "raise_fd_limit",
]

MAX_HEAD_BYTES = 64 * 1024  # request line and headers together; larger gets a 431
BODY_MIN_RATE = 64 * 1024  # bytes per second a declared body earns on top of body_timeout_s
FD_RESERVE = 64  # descriptors kept for the store, logs, listeners and token refreshes
_TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)
_TOO_LARGE_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
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
HEAD_TOO_LARGE_RESPONSE = _error_bytes(
    _TOO_LARGE_431,
    "invalid_request_error",
    "request_header_fields_too_large",
    f"The request line and headers exceed {MAX_HEAD_BYTES // 1024} KiB.",
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


class Connection(Protocol):
    def evict(self) -> None: ...


class Registry:
    """The open connections of one server, and which of them may be evicted (idle or reading a
    head), oldest first."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open: set[Connection] = set()
        self.evictable: dict[Connection, None] = {}  # insertion order = age
        self.last_refusal_log = 0.0

    def admit(self, conn: Connection) -> bool:
        while len(self.open) >= self.cap and self.evictable:
            victim = next(iter(self.evictable))
            self.forget(victim)
            victim.evict()
        if len(self.open) >= self.cap:
            return False
        self.open.add(conn)
        return True

    def forget(self, conn: Connection) -> None:
        self.open.discard(conn)
        self.evictable.pop(conn, None)

    def set_evictable(self, conn: Connection, evictable: bool) -> None:
        if not evictable:
            self.evictable.pop(conn, None)
        elif conn in self.open and conn not in self.evictable:
            self.evictable[conn] = None


_env_limits: list[ConnectionLimits] = []


def limits_from_env() -> ConnectionLimits:
    """`serve --workers N`: a worker builds its limits from the environment once."""
    if not _env_limits:
        _env_limits.append(ConnectionLimits.from_settings(load_settings()))
    return _env_limits[0]
