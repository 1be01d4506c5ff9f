"""server/front_door.py: the one middleware, table-driven through plain ASGI calls.

The inner application and the endpoints are plain ASGI callables standing in for FastAPI's
router and the chat routes; the front door, the app's exception handlers, the usage log and
the SQLite store are the real ones. Each case checks what the client receives (status, error
shape in its dialect, request id headers), whether the failure goes on up (to be logged), and
the usage row the request leaves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.server.app import render_error, route_exception_response
from ki2api.server.front_door import FrontDoor
from ki2api.state.base import UsageRow
from ki2api.state.sqlite import SQLiteStore
from ki2api.state.usage_log import UsageLog

Endpoint = Callable[[Request], Awaitable[Response]]


async def _ok(request: Request) -> Response:
    await request.body()
    return JSONResponse({"ok": True})


async def _refused(request: Request) -> Response:
    raise GatewayError(ErrorKind.RATE_LIMITED, "slow down", retry_after=2)


async def _bug(request: Request) -> Response:
    raise RuntimeError("a bug of ours")


async def _gone_mid_upload(request: Request) -> Response:
    raise ClientDisconnect()


async def _router(scope: Scope, receive: Receive, send: Send) -> None:
    """FastAPI's part: what is not a direct route ends here."""
    await JSONResponse({"routed": scope["method"]}, status_code=200)(scope, receive, send)


# (case, path, method, endpoint, status, error type in the body, raised, usage outcome)
CASES: list[tuple[str, str, str, Endpoint, int, str | None, bool, str | None]] = [
    ("ok", "/v1/chat/completions", "POST", _ok, 200, None, False, "ok"),
    ("refused-openai", "/v1/chat/completions", "POST", _refused, 429, "requests", False, None),
    ("refused-anthropic", "/v1/messages", "POST", _refused, 429, "rate_limit_error", False, None),
    ("bug-openai", "/v1/chat/completions", "POST", _bug, 500, "server_error", True, "internal"),
    ("bug-anthropic", "/v1/messages", "POST", _bug, 500, "api_error", True, "internal"),
    ("gone-mid-upload", "/v1/messages", "POST", _gone_mid_upload, 499, None, False, "cancelled"),
    ("other-method-is-routed", "/v1/chat/completions", "GET", _bug, 200, None, False, "ok"),
]


class Client:
    """One ASGI request: what was sent back."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def receive(self) -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])

    @property
    def body(self) -> Any:
        return orjson.loads(b"".join(m.get("body", b"") for m in self.messages[1:]))


def _scope(path: str, method: str, headers: list[tuple[bytes, bytes]] | None = None) -> Scope:
    return {
        "type": "http",
        "path": path,
        "method": method,
        "headers": headers or [(b"authorization", b"Bearer k")],
        "query_string": b"",
        "app": None,
    }


def _door(log: UsageLog, endpoint: Endpoint, **kw: Any) -> FrontDoor:
    def on_error(err: GatewayError, scope: Scope) -> Response:
        return render_error(err, scope)

    return FrontDoor(
        _router,
        keys=("k",),
        usage=lambda: log,
        on_error=on_error,
        on_exception=route_exception_response,
        routes={"/v1/chat/completions": endpoint, "/v1/messages": endpoint},
        **kw,
    )


async def _rows(tmp_path: Path, run: Callable[[UsageLog], Awaitable[None]]) -> list[UsageRow]:
    store = SQLiteStore.open(tmp_path / "state.sqlite3")
    try:
        log = UsageLog(store)
        await run(log)
        await log.aclose()
        return await store.usage_rows()
    finally:
        await store.aclose()


@pytest.mark.parametrize(
    ("path", "method", "endpoint", "status", "error", "raised", "outcome"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
async def test_what_the_client_gets_and_the_row_it_leaves(
    tmp_path: Path,
    path: str,
    method: str,
    endpoint: Endpoint,
    status: int,
    error: str | None,
    raised: bool,
    outcome: str | None,
) -> None:
    client = Client()

    async def run(log: UsageLog) -> None:
        door = _door(log, endpoint)
        scope = _scope(path, method, [(b"authorization", b"Bearer k"), (b"x-request-id", b"r-1")])
        if raised:
            with pytest.raises(RuntimeError):
                await door(scope, client.receive, client.send)
        else:
            await door(scope, client.receive, client.send)

    rows = await _rows(tmp_path, run)
    assert client.status == status
    assert client.headers[b"x-request-id"] == client.headers[b"request-id"] == b"r-1"
    assert (b"openai-processing-ms" in client.headers) == (200 <= status < 300)
    if error is not None:
        body = client.body
        assert body["error"]["type"] == error, body
        if path == "/v1/messages":
            assert body["type"] == "error"
    [row] = rows
    expected = outcome or ErrorKind.RATE_LIMITED.value
    assert (row.outcome, row.status, row.endpoint) == (expected, status, path)
    assert row.client_key == "key-1"


async def test_a_body_over_the_limit_is_refused_before_the_route(tmp_path: Path) -> None:
    client = Client()
    headers = [(b"authorization", b"Bearer k"), (b"content-length", b"101")]

    async def run(log: UsageLog) -> None:
        door = _door(log, _bug, max_body_bytes=100)
        await door(_scope("/v1/messages", "POST", headers), client.receive, client.send)

    [row] = await _rows(tmp_path, run)
    assert client.status == 413 and client.body["error"]["type"] == "request_too_large"
    assert (row.outcome, row.status) == (ErrorKind.REQUEST_TOO_LARGE.value, 413)


async def test_a_foreign_host_is_refused_without_a_usage_row(tmp_path: Path) -> None:
    client = Client()
    headers = [(b"authorization", b"Bearer k"), (b"host", b"evil.example")]

    async def run(log: UsageLog) -> None:
        door = _door(log, _ok, allowed_hosts=())
        await door(_scope("/v1/chat/completions", "POST", headers), client.receive, client.send)

    assert await _rows(tmp_path, run) == []
    assert client.status == 403 and client.body["error"]["type"] == "permission_error"
    assert client.headers[b"x-request-id"].startswith(b"req_")


async def test_the_console_gets_a_request_id_and_nothing_else(tmp_path: Path) -> None:
    client = Client()
    seen: list[Scope] = []

    async def console(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await Response("page")(scope, receive, send)

    async def run(log: UsageLog) -> None:
        door = _door(log, _ok)
        door.app = console
        await door(_scope("/ui/overview", "GET"), client.receive, client.send)

    assert await _rows(tmp_path, run) == []
    assert client.status == 200 and b"x-request-id" in client.headers


async def test_a_cancelled_request_still_leaves_its_row(tmp_path: Path) -> None:
    started = asyncio.Event()

    async def endless(request: Request) -> Response:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def run(log: UsageLog) -> None:
        door = _door(log, endless)
        client = Client()
        task = asyncio.ensure_future(
            door(_scope("/v1/chat/completions", "POST"), client.receive, client.send)
        )
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client.messages == []

    [row] = await _rows(tmp_path, run)
    assert (row.outcome, row.status) == ("cancelled", None)
