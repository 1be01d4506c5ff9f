"""Run an ASGI app under a real uvicorn server (on 127.0.0.1 unless told) in a background
thread."""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

# Ports for servers started as subprocesses (`--port N`). Asking the kernel for port 0 and
# handing the number on races: the kernel may give the same ephemeral port to another xdist
# worker before our subprocess binds it (seen as "address already in use"). So each worker
# takes ports from its own slice below the kernel's ephemeral range (32768 and up on Linux),
# skipping any that something already holds.
_SLICE = 1500
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
_FIRST = 20000 + (int(_WORKER) if _WORKER.isdigit() else 0) % 8 * _SLICE
_ports = itertools.count(_FIRST)


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on, not handed out before in this process."""
    for port in _ports:
        if port >= _FIRST + _SLICE:
            break
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port left in this worker's slice")


def _listening_socket(host: str) -> socket.socket:
    """A socket bound (port 0) and listening, for uvicorn to serve on: no port race at all."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(2048)
    return sock


@contextmanager
def serve_in_thread(
    app: Any, *, port: int | None = None, http: Any = "auto", host: str = "127.0.0.1"
) -> Iterator[str]:
    """Serve `app` on `host` and yield its base URL (no trailing slash). `http`: uvicorn's
    protocol, e.g. `ki2api.server.http1.protocol_for(settings)` as `ki2api serve` uses."""
    sock = _listening_socket(host) if port is None else None
    if sock is not None:
        port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=http,
        log_level="warning",
        lifespan="on",
        access_log=False,
    )
    server = uvicorn.Server(config)
    sockets = [sock] if sock is not None else None
    thread = threading.Thread(target=server.run, kwargs={"sockets": sockets}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if sock is not None:
            sock.close()


async def lifespan_done(scope: Any, receive: Any, send: Any) -> bool:
    """For a test's bare ASGI app: answers the lifespan protocol; True when `scope` was the
    lifespan's (the app has nothing more to do with it)."""
    if scope["type"] != "lifespan":
        return False
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})
    return True
