"""server.accounting: the outcome a usage row gets when the application does not finish.

The inner applications are plain ASGI callables standing in for the routes; the middleware,
the usage log and the SQLite store are the real ones.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from starlette.types import Message, Receive, Scope, Send

from ki2api.server.front_door import FrontDoor
from ki2api.state.sqlite import SQLiteStore
from ki2api.state.usage_log import UsageLog


async def _cancelled_early(scope: Scope, receive: Receive, send: Send) -> None:
    raise asyncio.CancelledError  # the server stopping before any answer (graceful timeout)


async def _cancelled_mid_body(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise asyncio.CancelledError


async def _bug_early(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("a bug of ours")


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


CASES = [
    ("cancelled-before-status", _cancelled_early, asyncio.CancelledError, "cancelled"),
    ("cancelled-mid-body", _cancelled_mid_body, asyncio.CancelledError, "cancelled"),
    ("bug-before-status", _bug_early, RuntimeError, "internal"),
    ("ok", _ok, None, "ok"),
]


@pytest.mark.parametrize(
    ("app", "raises", "outcome"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_outcome_of_an_unfinished_request(
    tmp_path: Path, app: object, raises: type[BaseException] | None, outcome: str
) -> None:
    store = SQLiteStore.open(tmp_path / "state.sqlite3")
    log = UsageLog(store)
    middleware = FrontDoor(app, usage=lambda: log, keys=("k",))  # type: ignore[arg-type]
    scope = {"type": "http", "path": "/v1/messages", "headers": [], "method": "POST"}

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        return None

    try:
        if raises is None:
            await middleware(scope, receive, send)
        else:
            with pytest.raises(raises):
                await middleware(scope, receive, send)
        await log.aclose()
        assert [r.outcome for r in await store.usage_rows()] == [outcome]
    finally:
        await store.aclose()
