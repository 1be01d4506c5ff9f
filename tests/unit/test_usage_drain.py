"""Closing the usage log waits for the rows of requests still unwinding (issue 9).

uvicorn cancels the requests that outlive its graceful shutdown and then closes the app at
once; a cancelled request reaches the `add` of its row only after its own clean-up (closing the
upstream call and the like). `FrontDoor` (its accounting) brackets each request with `begin` /
`end`, and `UsageLog.aclose` waits for them (at most `drain_s`) before its last write.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ki2api.server.front_door import FrontDoor
from ki2api.state.base import UsageRow
from ki2api.state.sqlite import SQLiteStore
from ki2api.state.usage_log import UsageLog

SCOPE: Scope = {"type": "http", "path": "/v1/chat/completions", "headers": [], "method": "POST"}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore.open(tmp_path / "ki2api.db")
    yield s
    await s.aclose()


async def _receive() -> Message:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def _send(message: Message) -> None:
    return None


def slow_to_unwind(entered: asyncio.Event, steps: int) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        entered.set()
        try:
            await asyncio.Event().wait()  # a stream that never ends by itself
        finally:
            for _ in range(steps):  # its clean-up takes a few turns of the loop
                await asyncio.sleep(0)

    return app


@pytest.mark.parametrize("steps", [0, 1, 20])
async def test_aclose_waits_for_a_cancelled_request_to_add_its_row(
    store: SQLiteStore, steps: int
) -> None:
    log = UsageLog(store, flush_interval_s=3600)
    log.start()
    entered = asyncio.Event()
    app = FrontDoor(slow_to_unwind(entered, steps), usage=lambda: log, keys=("k",))
    request = asyncio.create_task(app(dict(SCOPE), _receive, _send))
    await entered.wait()
    request.cancel()  # what uvicorn does when the graceful shutdown times out ...
    await log.aclose()  # ... right before it closes the app
    with pytest.raises(asyncio.CancelledError):
        await request
    rows = await store.usage_rows()
    assert [r.outcome for r in rows] == ["cancelled"]


async def test_the_wait_is_bounded(store: SQLiteStore) -> None:
    log = UsageLog(store, flush_interval_s=3600, drain_s=0.05)
    log.start()
    log.begin()  # a request that never ends
    log.add(
        UsageRow(
            at=1.0,
            client_key="key-1",
            account_id=None,
            model=None,
            input_tokens=None,
            output_tokens=None,
            latency_ms=1.0,
            outcome="ok",
        )
    )
    await asyncio.wait_for(log.aclose(), 30)  # generous: returns after drain_s
    assert await store.usage_count() == 1


async def test_begin_end_balance(store: SQLiteStore) -> None:
    log = UsageLog(store, flush_interval_s=3600, drain_s=3600)
    log.begin()
    log.begin()
    log.end()
    log.end()
    log.end()  # one too many does not make the count negative
    await asyncio.wait_for(log.aclose(), 30)  # nothing open: no wait
