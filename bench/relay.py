"""A bare relay: what passing an answer through a Python process costs, and nothing else.

`python -m bench.relay PORT UPSTREAM_HOST UPSTREAM_PORT` listens on 127.0.0.1:PORT and, for
each connection, opens one to the upstream and copies bytes both ways as they come: each read
is written on at once, nothing is parsed, on uvloop as the gateway is. The CPU section sends
the emulator's answers through it (as the emulator called directly) beside the gateway: its CPU
per answer is the I/O alone of the same stream (a read per upstream burst, a write per read,
the loop's turns), the floor under any gateway written in Python on this machine.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from pathlib import Path

from bench.proc import Child, free_port

__all__ = ["start_relay"]

_REPO = Path(__file__).resolve().parent.parent


class _Upstream(asyncio.Protocol):
    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class _Client(asyncio.Protocol):
    def __init__(self, host: str, port: int) -> None:
        self.where = (host, port)
        self.upstream: asyncio.Transport | None = None
        self.early: list[bytes] = []  # what came before the upstream connection was up

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        asyncio.get_running_loop().create_task(self._open())

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            upstream, _ = await loop.create_connection(
                lambda: _Upstream(self.transport), *self.where
            )
        except OSError:
            self.transport.close()
            return
        self.upstream = upstream  # type: ignore[assignment]
        for data in self.early:
            upstream.write(data)  # type: ignore[attr-defined]
        self.early = []

    def data_received(self, data: bytes) -> None:
        if self.upstream is None:
            self.early.append(data)
        else:
            self.upstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


async def _serve(port: int, host: str, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(host, upstream_port), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def start_relay(upstream_port: int, logs: Path) -> tuple[Child, int]:
    """The relay as a child process in front of 127.0.0.1:`upstream_port`, once it listens."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.relay", str(port), "127.0.0.1", str(upstream_port)]
    child = Child("relay", argv, log_dir=logs, cwd=_REPO)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return child, port
        except OSError:
            if child.poll() is not None or time.monotonic() > deadline:
                child.stop()
                raise RuntimeError(f"the relay did not start:\n{child.log_tail()}") from None
            time.sleep(0.02)


if __name__ == "__main__":
    import uvloop

    uvloop.run(_serve(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
