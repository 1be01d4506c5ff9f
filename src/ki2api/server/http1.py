"""The gateway's HTTP/1.1 server protocol: uvicorn runs the server, this speaks HTTP.

uvicorn's `Server` keeps doing what it does well (binding, signals, graceful shutdown, the
`Date` header, `--workers`); `uvicorn.Config(http=...)` hands each accepted connection to
`GatewayProtocol` (`protocol_for(settings)`, or `IMPORT_STRING` in a worker). It replaces
uvicorn's httptools protocol and its request cycle, for two reasons measured with `make bench`
(issue 17): a held stream kept about 13 KB in them (two `asyncio.Event`s with a deque each, a
pipeline deque, per-connection copies of the server's settings, a flow-control object), and
every SSE chunk went through a general `send`. Here an exchange is one slotted object
(`server/http1_exchange.py`) that waits on a plain future only while someone waits.

On top of plain HTTP/1.1 (keep-alive, pipelining, `Expect: 100-continue`, chunked or sized
bodies both ways, flow control), the connection is bounded (`server/connections.py`):

- idle   (after accept, and after a response on a keep-alive connection): nothing arrives for
  `idle_timeout_s` -> the connection is closed (silently: no request is pending).
- head   (from the first byte of a request to the end of its headers): `header_timeout_s` ->
  `408 Request Timeout` with `Connection: close`; a head above `MAX_HEAD_BYTES` -> `431`.
- body   (from the end of the headers to the end of the body): `body_timeout_s` plus one second
  per `BODY_MIN_RATE` bytes the request declares -> `408` if no response has started, and the
  application's next `receive()` returns `http.disconnect`.
- answering: no deadline. Writing a response (a long, mostly silent stream) is never timed.

At most `max_connections` connections are open per process. A connection that would exceed
the cap first evicts the connection that has been idle (or reading a head) the longest, so an
idle flood cannot lock out a real client (`/health` keeps answering); when every connection is
busy with a request, the newcomer gets a `503` with `Connection: close` without being read.
WebSocket upgrades are not offered: such a request is answered as plain HTTP.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.utils import get_local_addr, get_remote_addr, is_ssl

from ki2api.server.connections import (
    BUSY_RESPONSE,
    HEAD_TIMEOUT_RESPONSE,
    HEAD_TOO_LARGE_RESPONSE,
    MAX_HEAD_BYTES,
    ConnectionLimits,
    body_deadline_s,
    limits_from_env,
)
from ki2api.server.http1_exchange import (
    CLIENT_GONE,
    HIGH_WATER,
    WRITE_NOW,
    Exchange,
    bad_request,
    wake_all,
)
from ki2api.server.http1_shared import Shared
from ki2api.settings import Settings

__all__ = ["IMPORT_STRING", "GatewayProtocol", "protocol_for"]

IMPORT_STRING = "ki2api.server.http1:GatewayProtocol"
_REFUSAL_LOG_EVERY_S = 60.0

log = logging.getLogger("ki2api.connections")
_error_log = logging.getLogger("uvicorn.error")


_servers: weakref.WeakKeyDictionary[Any, Shared] = weakref.WeakKeyDictionary()


class GatewayProtocol(asyncio.Protocol):
    """One client connection (see the module's docstring)."""

    limits: ClassVar[ConnectionLimits | None] = None  # None: from the environment

    __slots__ = (
        "_answering",
        "_expect_100",
        "_head_bytes",
        "headers",
        "_queued",
        "_reading",
        "_deaf",
        "_timer",
        "url",
        "client",
        "cycle",
        "drain_waiters",
        "loop",
        "parser",
        "read_paused",
        "scheme",
        "server",
        "server_state",
        "shared",
        "transport",
        "write_paused",
    )

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.loop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        shared = _servers.get(server_state)
        if shared is None:
            limits = type(self).limits or limits_from_env()
            shared = _servers[server_state] = Shared(config, app_state, server_state, limits)
        self.shared = shared
        self.parser: httptools.HttpRequestParser | None = None  # made when bytes arrive
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        self.cycle: Exchange | None = None  # the request arriving (or the last one)
        self._answering: Exchange | None = None  # the request being answered
        self._queued: list[tuple[Exchange, Any]] | None = None  # pipelined, oldest first
        self._timer: asyncio.TimerHandle | None = None
        self._reading: str | None = None  # "head" / "body" while a request is arriving
        self._deaf = False  # reads nothing more: refused at the cap, or gone
        self.read_paused = False
        self.write_paused = False
        self.drain_waiters: list[asyncio.Future[None]] | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self._expect_100 = False
        self._head_bytes = 0

    # Connection lifecycle (asyncio.Protocol)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.server_state.connections.add(self)
        self.transport = transport
        self.server = self.shared.local_address(get_local_addr(transport))
        self.client = get_remote_addr(transport)
        if is_ssl(transport):
            self.scheme = "https"
        if not self.shared.registry.admit(self):
            self._refuse()
            return
        self._become_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        self._cancel_timer()
        self.shared.registry.forget(self)
        for cycle in {self._answering, self.cycle, *(c for c, _ in self._queued or ())}:
            if cycle is not None:  # the one answered, the one arriving, any pipelined between
                if not cycle.complete:
                    cycle.disconnected = True
                cycle.notify()
        self.resume_writing()
        if exc is None:
            self.transport.close()
        self._deaf = True
        self.parser = None

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself

    def data_received(self, data: bytes) -> None:
        if self._deaf:
            return
        parser = self.parser
        if parser is None:
            parser = self.parser = httptools.HttpRequestParser(self)
            parser.set_dangerous_leniencies(lenient_data_after_close=True)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no upgrade is offered: the request is answered as plain HTTP
        except httptools.HttpParserError:
            _error_log.warning("Invalid HTTP request received.")
            self._answer_and_close(bad_request(self.server_state.default_headers))
            return
        if self._reading is None:
            # Between requests (a stream being answered, an idle keep-alive) the connection
            # keeps no parser (0.9 KB); the next request's first bytes make a new one.
            self.parser = None

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiters, self.drain_waiters = self.drain_waiters, None
        wake_all(waiters)

    async def drain(self) -> None:
        """Wait until the transport takes writes again (or the connection is gone)."""
        waiter = self.loop.create_future()
        if self.drain_waiters is None:
            self.drain_waiters = []
        self.drain_waiters.append(waiter)
        await waiter

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close now if nothing is being answered, else after."""
        if self.cycle is None or self.cycle.complete:
            self.transport.close()
        else:
            self.cycle.keep_alive = False

    def evict(self) -> None:
        """Closed to make room for a new connection (this one was idle or reading a head)."""
        self._cancel_timer()
        log.debug("closing an idle connection to make room for a new one")
        self._close()

    # Parser callbacks (called from data_received)

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self._expect_100 = False
        self._head_bytes = 0
        self._reading = "head"
        self._arm(self.shared.limits.header_timeout_s, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        if not name.islower():  # most clients send lower case already: no copy then
            name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect_100 = True
        self.headers.append((name, value))
        self._count_head(len(name) + len(value) + 4)

    def on_headers_complete(self) -> None:
        if self._head_bytes > MAX_HEAD_BYTES:
            return  # answered with 431; the connection is closing
        self._reading = "body"
        self.shared.registry.set_evictable(self, False)
        limits = self.shared.limits
        self._arm(body_deadline_s(limits, self._declared_length()), self._body_timed_out)
        parser = self.parser
        assert parser is not None  # we are inside its feed_data
        http_version = parser.get_http_version()
        scope = self.shared.scope(self, parser.get_method().decode("ascii"), http_version)
        keep_alive = http_version != "1.0" and parser.should_keep_alive()
        previous = self.cycle
        self.cycle = cycle = Exchange(scope, self, keep_alive, self._expect_100)
        scope["extensions"] = {CLIENT_GONE: cycle.when_gone, WRITE_NOW: cycle.write_now}
        app = self.shared.app_for(self)
        if previous is None or previous.complete:
            self._start(cycle, app)
        else:  # pipelined: answered in order, once the previous response is complete
            self.pause_reading()
            if self._queued is None:
                self._queued = []
            self._queued.append((cycle, app))

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle is None or cycle.complete:
            return
        cycle.add_body(body)
        if cycle.buffered() > HIGH_WATER:
            self.pause_reading()
        cycle.notify()

    def on_message_complete(self) -> None:
        self._reading = None
        self._cancel_timer()
        cycle = self.cycle
        if cycle is None:
            return
        if cycle.complete:
            if not self._queued:
                self._become_idle()  # answered before its body was read: the body is in now
            return
        cycle.more_body = False
        cycle.notify()

    # The exchange's callbacks

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.resume_reading()
        if self._queued:
            cycle, app = self._queued.pop(0)
            self._start(cycle, app)
            return
        if self._reading is None:
            self._become_idle()  # else the rest of a request is arriving

    def _start(self, cycle: Exchange, app: Any) -> None:
        """The app runs as the task itself, not inside a wrapper coroutine (a frame less held
        for a stream's life, and on every resume); its end is checked by `cycle.finished`."""
        self._answering = cycle
        coro = app(cycle.scope, cycle.receive, cycle.send)
        if self.shared.reset_contextvars:
            task = self.loop.create_task(coro, context=contextvars.Context())
        else:
            task = self.loop.create_task(coro)
        self.server_state.tasks.add(task)
        task.add_done_callback(cycle.finished)  # one callback (a second makes a list)

    # Timers

    def _become_idle(self) -> None:
        self.shared.registry.set_evictable(self, True)
        self._arm(self.shared.limits.idle_timeout_s, self._idle_timed_out)

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
        log.debug("request head not received within the header deadline")
        self._answer_and_close(HEAD_TIMEOUT_RESPONSE)

    def _body_timed_out(self) -> None:
        self._timer = None
        log.debug("request body not received in time; closing the connection")
        cycle = self.cycle
        if cycle is not None and not cycle.complete:
            if not cycle.started and not self.transport.is_closing():
                self.transport.write(HEAD_TIMEOUT_RESPONSE)
            # The application sees the disconnect at once and its later writes go nowhere.
            cycle.disconnected = True
            cycle.notify()
        self._close()

    # Helpers

    def _count_head(self, size: int) -> None:
        before = self._head_bytes
        self._head_bytes = before + size
        if before <= MAX_HEAD_BYTES < self._head_bytes:
            log.debug("request head larger than %d bytes", MAX_HEAD_BYTES)
            self._answer_and_close(HEAD_TOO_LARGE_RESPONSE)

    def _declared_length(self) -> int:
        for name, value in self.headers:
            if name == b"content-length":
                return int(value) if value.isdigit() else 0
        return 0

    def _answer_and_close(self, response: bytes) -> None:
        self._cancel_timer()
        if not self.transport.is_closing():
            self.transport.write(response)
        self._close()

    def _close(self) -> None:
        self.shared.registry.forget(self)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _refuse(self) -> None:
        self._deaf = True
        now = time.monotonic()
        if now - self.shared.registry.last_refusal_log >= _REFUSAL_LOG_EVERY_S:
            self.shared.registry.last_refusal_log = now
            log.warning(
                "%d client connections are open and busy (KI2API_MAX_CONNECTIONS): "
                "refusing new ones with 503",
                len(self.shared.registry.open),
            )
        self.transport.write(BUSY_RESPONSE)
        self.transport.close()


def protocol_for(settings: Settings) -> type[GatewayProtocol]:
    """The protocol class for `uvicorn.Config(http=...)` with these settings' limits."""
    limits = ConnectionLimits.from_settings(settings)
    return type("GatewayProtocol", (GatewayProtocol,), {"limits": limits, "__slots__": ()})
