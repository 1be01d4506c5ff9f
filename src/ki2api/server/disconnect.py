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
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.types import Receive, Scope

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.server.http1_exchange import CLIENT_GONE

__all__ = ["RAW_RECEIVE", "ClientWatch", "client_watch", "close_watch", "unless_gone"]

T = TypeVar("T")


_WATCH = "client_watch"  # scope["state"] key of the request's ClientWatch
# scope["state"] key of the server's own `receive`, when a wrapper (the body limit) is in
# between: the watcher listens on it directly once the body is read
RAW_RECEIVE = "raw_receive"


class ClientWatch:
    """The request's one listener for the client's disconnect. Under the gateway's own server
    (`server/http1.py`) the connection tells it (the `ki2api.client_gone` extension: no task);
    under any other ASGI server it is a task awaiting `receive()` (the request body was read
    already). A task that `run`s work under it is cancelled when the client goes; the
    cancellation ends that work the normal way (its `finally` blocks close the upstream call)
    and comes out as CANCELLED. One watcher serves the wait for the answer and the stream after
    it (`streaming.SSEResponse`), so a request needs no task of its own per wait and no task
    group."""

    __slots__ = ("_closed", "_guarded", "_listener", "_receive", "gone")

    def __init__(
        self, receive: Receive, when_gone: Callable[[Callable[[], None]], None] | None = None
    ) -> None:
        self._receive = receive
        self._guarded: tuple[asyncio.Task[Any], ...] = ()  # (a set: 216 B per stream)
        self.gone = False
        self._closed = False
        self._listener: asyncio.Task[None] | None = None
        if when_gone is not None:
            when_gone(self._went)
        else:
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        try:
            while (await self._receive())["type"] != "http.disconnect":
                pass
        except Exception:  # a receive that fails: nothing more will come from this client
            pass
        self._went()

    def _went(self) -> None:
        if self._closed:
            return
        self.gone = True
        for task in self._guarded:
            task.cancel()

    async def run(self, work: Awaitable[T]) -> T:
        """`work`'s result, or CANCELLED when the client goes first."""
        if self.gone:
            _close(work)
            raise _cancelled()
        task = self.guard()
        try:
            return await work
        except asyncio.CancelledError:
            if self.ours(task):
                raise _cancelled() from None
            raise
        finally:
            self.unguard(task)

    def guard(self) -> asyncio.Task[Any]:
        """The current task, cancelled from now on when the client goes (`run` without a
        coroutine of its own: the caller's `CancelledError` is the client's when `ours`)."""
        task = asyncio.current_task()
        assert task is not None
        self._guarded += (task,)
        return task

    def unguard(self, task: asyncio.Task[Any]) -> None:
        self._guarded = tuple(t for t in self._guarded if t is not task)

    def ours(self, task: asyncio.Task[Any]) -> bool:
        """Whether the `CancelledError` that `task` caught came from the client going (and
        from nobody else)."""
        return self.gone and task.uncancel() == 0

    def close(self) -> None:
        """The request is over: stop listening."""
        self._closed = True
        if self._listener is not None:
            self._listener.cancel()


def client_watch(scope: Scope, receive: Receive) -> ClientWatch:
    """The request's watcher, started on first use."""
    state = scope.setdefault("state", {})
    watch = state.get(_WATCH)
    if not isinstance(watch, ClientWatch):
        when_gone = (scope.get("extensions") or {}).get(CLIENT_GONE)
        watch = ClientWatch(state.get(RAW_RECEIVE) or receive, when_gone)
        state[_WATCH] = watch
    return watch


def close_watch(scope: Scope) -> None:
    """Stop the request's watcher, if it has one (the front door, when the request is over)."""
    watch = (scope.get("state") or {}).get(_WATCH)
    if isinstance(watch, ClientWatch):
        watch.close()


async def unless_gone(request: Request, work: Awaitable[T]) -> T:
    return await client_watch(request.scope, request.receive).run(work)


def _close(work: Awaitable[Any]) -> None:
    close = getattr(work, "close", None)  # a coroutine never awaited: no warning
    if close is not None:
        close()


def _cancelled() -> GatewayError:
    return GatewayError(
        ErrorKind.CANCELLED, "The client closed the connection before the answer was ready."
    )
