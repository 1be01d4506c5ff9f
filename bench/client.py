"""A minimal asyncio HTTP/1.1 keep-alive client for the load generator.

Small on purpose: the load generator must stay cheap in CPU and see each body piece the moment
it leaves the socket, so timings are not blurred by a client library's buffering.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

__all__ = ["Connection", "HttpClientError", "Response"]

_READ_SIZE = 65536


class HttpClientError(Exception):
    """The server answered something this client cannot read, or closed the connection."""


class Response:
    """Status and headers of one response; the body is read with `pieces()`."""

    def __init__(self, conn: Connection, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = headers
        self._conn = conn

    async def pieces(self) -> AsyncIterator[bytes]:
        """The body as it arrives: one piece per HTTP chunk (or socket read)."""
        reader = self._conn.reader
        complete = False
        try:
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                async for piece in _chunked(reader):
                    yield piece
            elif "content-length" in self.headers:
                async for piece in _sized(reader, int(self.headers["content-length"])):
                    yield piece
            else:
                while piece := await reader.read(_READ_SIZE):
                    yield piece
                return  # read to EOF: the connection is spent
            complete = True
        finally:
            keep = self.headers.get("connection", "").lower() != "close"
            self._conn.reusable = complete and keep

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self.pieces()])


async def _chunked(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return
        data = await reader.readexactly(size + 2)
        yield data[:-2]


async def _sized(reader: asyncio.StreamReader, length: int) -> AsyncIterator[bytes]:
    left = length
    while left > 0:
        piece = await reader.read(min(left, _READ_SIZE))
        if not piece:
            raise HttpClientError("connection closed inside a sized body")
        left -= len(piece)
        yield piece


class Connection:
    """One keep-alive connection; `request` reopens it when the last one cannot be reused."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reusable = False
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def reader(self) -> asyncio.StreamReader:
        assert self._reader is not None
        return self._reader

    async def open(self) -> None:
        await self.close()
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self.reusable = True

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        self.reusable = False
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def abort(self) -> None:
        """Drop the connection at once (a client that goes away mid-stream)."""
        if self._writer is not None:
            self._writer.transport.abort()
        self._writer, self._reader, self.reusable = None, None, False

    async def request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes = b""
    ) -> Response:
        """Send a request and read the status line and headers.

        A reused connection the server has meanwhile closed (idle keep-alive timeout) is
        reopened and the request sent once more.
        """
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        reused = self.reusable and self._writer is not None
        for attempt in (1, 2):
            if not self.reusable or self._writer is None:
                await self.open()
            assert self._writer is not None
            self.reusable = False  # until the body has been read to the end
            try:
                self._writer.write(raw)
                return await self._read_head()
            except HttpClientError:
                if not reused or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _read_head(self) -> Response:
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            await self.close()
            raise HttpClientError(f"no response ({type(exc).__name__})") from None
        status_line, *header_lines = raw.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise HttpClientError(f"bad status line {status_line!r}")
        headers: dict[str, str] = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        return Response(self, int(parts[1]), headers)
