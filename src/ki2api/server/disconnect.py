"""Stop working for a client that has gone away before its answer was ready.

Until the first byte of a streamed answer (and for the whole of a non-streaming one) nothing
is written to the client, so a client that closes its connection would otherwise go unnoticed
until the answer is done: the upstream call would run on, spending an account's quota, and the
usage row would say `ok`. `unless_gone(request, work)` awaits `work` while listening for the
ASGI `http.disconnect`; when it comes first, `work` is cancelled (which closes the upstream
call) and CANCELLED is raised (the usage row says `cancelled`; nobody reads the response).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request
from starlette.types import Receive

from ki2api.core.errors import ErrorKind, GatewayError

__all__ = ["unless_gone"]

T = TypeVar("T")


async def _gone(receive: Receive) -> None:
    """Returns when the client has disconnected (the request body was read already)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def unless_gone(request: Request, work: Awaitable[T]) -> T:
    task: asyncio.Future[T] = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_gone(request.receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        watcher.cancel()
        with contextlib.suppress(BaseException):
            await watcher
    if task.cancelled():
        raise GatewayError(
            ErrorKind.CANCELLED, "The client closed the connection before the answer was ready."
        )
    return task.result()
