"""One request and its response on a client connection (`server/http1.py`): the ASGI side.

`Exchange` is what the application's `receive` and `send` talk to. It is slotted and holds no
event objects: `receive` waits on a future made only while it waits (the disconnect watcher
waits there for a whole stream), and the connection wakes it (`notify`) when body bytes, the
body's end, the response's end or a disconnect arrive. A response body is written as it is
sent: a chunk of a chunked response is one write of its size line, data and CRLF.
"""

from __future__ import annotations

import asyncio
import http
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

if TYPE_CHECKING:
    from ki2api.server.http1 import GatewayProtocol

__all__ = ["CLIENT_GONE", "HIGH_WATER", "WRITE_NOW", "Exchange", "bad_request", "wake_all"]

CLIENT_GONE = "ki2api.client_gone"  # the scope's extension: `Exchange.when_gone`
WRITE_NOW = "ki2api.write_now"  # the scope's extension: `Exchange.write_now`

HIGH_WATER = 65536  # request body bytes buffered before the connection stops reading

_HEADER_NAME = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
_HEADER_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_DISCONNECT = {"type": "http.disconnect"}

_error_log = logging.getLogger("uvicorn.error")


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %b\r\n" % (status, phrase)


_STATUS_LINES = {status: _status_line(status) for status in range(100, 600)}


def _plain(status: int, text: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    body = text.encode()
    head = [_STATUS_LINES[status]]
    head += [b"%b: %b\r\n" % pair for pair in default_headers]
    head.append(b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n")
    head.append(b"content-length: %d\r\n\r\n" % len(body))
    return b"".join(head) + body


def wake_all(waiters: list[asyncio.Future[None]] | None) -> None:
    """Every still pending future of `waiters` done (a wait that was cancelled is not)."""
    for waiter in waiters or ():
        if not waiter.done():
            waiter.set_result(None)


def bad_request(default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The answer to bytes that are not HTTP/1.1 (the connection closes after it)."""
    return _plain(400, "Invalid HTTP request received.", default_headers)


class Exchange:
    """One request/response on a connection (see the module's docstring)."""

    __slots__ = (
        "body",
        "chunked",
        "complete",
        "conn",
        "disconnected",
        "head",
        "keep_alive",
        "more_body",
        "on_gone",
        "pending",
        "ready",
        "remaining",
        "scope",
        "started",
        "waiters",
        "waiting_100",
    )

    def __init__(
        self, scope: dict[str, Any], conn: GatewayProtocol, keep_alive: bool, expect_100: bool
    ) -> None:
        self.scope = scope
        self.conn = conn
        self.keep_alive = keep_alive
        self.waiting_100 = expect_100
        self.head = scope["method"] == "HEAD"
        self.disconnected = False
        self.body: bytes | bytearray = b""
        self.more_body = True
        self.ready = False  # something arrived that `receive` has not returned yet
        self.waiters: list[asyncio.Future[None]] | None = None
        self.started = False
        self.complete = False
        self.chunked: bool | None = None
        self.remaining = 0  # bytes a sized response still owes
        self.on_gone: Callable[[], None] | None = None
        self.pending: bytes | None = None  # the response's head, until its first body bytes

    def when_gone(self, callback: Callable[[], None]) -> None:
        """The `ki2api.client_gone` ASGI extension: `callback` is called once, when the client
        goes (or at once if it has) before the response is complete. A listener needs no task
        awaiting `receive()` for it (`server/disconnect.py`)."""
        if self.disconnected:
            callback()
        else:
            self.on_gone = callback

    def write_now(self, data: bytes) -> bool:
        """The `ki2api.write_now` ASGI extension: `data` written at once as more of the body
        of a started response, outside the app's `send` (a keep-alive written by a timer
        while the app's task waits for something else: `server/inline_stream.py`). False, and
        nothing written, when the connection cannot take it now: no response started, the
        response complete, the client gone, or its writes paused (the client is not reading).
        `write_now(b"")` only asks."""
        if not self.started or self.complete or self.disconnected or self.conn.write_paused:
            return False
        if data:
            self._body(data, True)
        return True

    # The connection's side

    def add_body(self, data: bytes) -> None:
        body = self.body
        if not body:
            self.body = data
        elif isinstance(body, bytearray):
            body += data
        else:
            self.body = bytearray(body) + data

    def buffered(self) -> int:
        return len(self.body)

    def notify(self) -> None:
        self.ready = True
        waiters, self.waiters = self.waiters, None
        wake_all(waiters)
        if self.disconnected and self.on_gone is not None:
            callback, self.on_gone = self.on_gone, None
            callback()

    # The application's side

    def finished(self, task: asyncio.Task[Any]) -> None:
        """The app's task is over: what uvicorn's request cycle checks after the app returns.
        A failure before the response started gets a 500; after, the connection closes."""
        self.conn.server_state.tasks.discard(task)
        if task.cancelled():
            failure: BaseException | None = asyncio.CancelledError()
        else:
            failure = task.exception()
        if failure is not None:
            _error_log.error("Exception in ASGI application\n", exc_info=failure)
            self._end_badly()
        elif task.result() is not None:
            _error_log.error("ASGI callable should return None, but returned '%s'.", task.result())
            self.conn.transport.close()
        elif not self.started and not self.disconnected:
            _error_log.error("ASGI callable returned without starting response.")
            self._end_badly()
        elif not self.complete and not self.disconnected:
            _error_log.error("ASGI callable returned without completing response.")
            self.conn.transport.close()

    def _end_badly(self) -> None:
        if self.started or self.disconnected:
            if not self.complete:
                self.conn.transport.close()
            return
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"21"),
            (b"connection", b"close"),
        ]
        self._start({"status": 500, "headers": headers})
        self._body(b"Internal Server Error", False)

    async def receive(self) -> dict[str, Any]:
        conn = self.conn
        if self.waiting_100:
            self.waiting_100 = False
            if not conn.transport.is_closing():
                conn.transport.write(_CONTINUE)
        if not self.disconnected and not self.complete:
            conn.resume_reading()
            if not self.ready:
                await self._wait()
            self.ready = False
        if self.disconnected or self.complete:
            return dict(_DISCONNECT)
        body, self.body = self.body, b""
        if isinstance(body, bytearray):
            body = bytes(body)
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def _wait(self) -> None:
        waiter: asyncio.Future[None] = self.conn.loop.create_future()
        if self.waiters is None:
            self.waiters = []
        self.waiters.append(waiter)
        try:
            await waiter
        finally:
            waiters = self.waiters
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)  # cancelled: not woken

    async def send(self, message: dict[str, Any]) -> None:
        conn = self.conn
        if conn.write_paused and not self.disconnected:
            await conn.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"Expected 'http.response.start', but got '{kind}'.")
            self._start(message)
        elif self.complete:
            raise RuntimeError(f"Unexpected ASGI message '{kind}' after the response completed.")
        elif kind != "http.response.body":
            raise RuntimeError(f"Expected 'http.response.body', but got '{kind}'.")
        else:
            self._body(message.get("body", b""), message.get("more_body", False))

    def _framed(self, body: bytes, more: bool) -> bytes:
        """What goes on the wire for this body message."""
        if self.head:
            self.remaining = 0
            return b""
        if self.chunked:
            if body:  # size line, data, CRLF (and the last chunk when it ends)
                end = b"\r\n" if more else b"\r\n0\r\n\r\n"
                return b"%x\r\n%b%b" % (len(body), body, end)
            return b"" if more else b"0\r\n\r\n"
        if len(body) > self.remaining:
            raise RuntimeError("Response content longer than Content-Length")
        self.remaining -= len(body)
        return body

    def _body(self, body: bytes, more: bool) -> None:
        out = self._framed(body, more)
        transport = self.conn.transport
        head = self.pending
        if head is not None:  # the response's head goes out with its first body bytes
            self.pending = None
            out = head + out
        if out:
            transport.write(out)
        if not more:
            if self.remaining != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.complete = True
            self.notify()
            if not self.keep_alive:
                transport.close()
            self.conn.on_response_complete()

    def _start(self, message: dict[str, Any]) -> None:
        self.started = True
        self.waiting_100 = False
        status = int(message["status"])
        conn = self.conn
        shared = conn.shared
        if shared.access_log and shared.access_logger.isEnabledFor(logging.INFO):
            scope = self.scope
            shared.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(scope),  # type: ignore[arg-type]
                scope["method"],
                get_path_with_query_string(scope),  # type: ignore[arg-type]
                scope["http_version"],
                status,
            )
        content = [_STATUS_LINES.get(status) or _status_line(status)]
        close_given = False
        for headers in (conn.server_state.default_headers, message.get("headers", ())):
            for name, value in headers:
                close_given = self._header(name, value, content) or close_given
        if not self.keep_alive and not close_given:
            content.append(b"connection: close\r\n")
        if self.chunked is None and not self.head and status not in (204, 304):
            self.chunked = True  # neither a length nor chunked given
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        # Written with the first body bytes (one write, one wake-up of the client instead of
        # two: the first write of a response is the dear one), or at the end of this turn of
        # the loop if the app sends none before it waits for something.
        self.pending = b"".join(content)
        conn.loop.call_soon(self._flush_head)

    def _flush_head(self) -> None:
        head = self.pending
        if head is not None:
            self.pending = None
            self.conn.transport.write(head)

    def _header(self, name: bytes, value: bytes, content: list[bytes]) -> bool:
        """Adds one response header to `content`; True when it is `Connection: close`."""
        if _HEADER_NAME.search(name):
            raise RuntimeError("Invalid HTTP header name.")
        if _HEADER_VALUE.search(value):
            raise RuntimeError("Invalid HTTP header value.")
        name = name.lower()
        if name == b"content-length" and self.chunked is None:
            self.remaining = int(value.decode())
            self.chunked = False
        elif name == b"transfer-encoding" and value.lower() == b"chunked":
            self.remaining = 0
            self.chunked = True
        content += (name, b": ", value, b"\r\n")
        if name == b"connection":
            if b"close" in [token.lower().strip() for token in value.split(b",")]:
                self.keep_alive = False
                return True
        return False
