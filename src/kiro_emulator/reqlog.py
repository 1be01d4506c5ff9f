"""The introspection log of received requests. Tokens and secrets never enter it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .common import emulator, json_object, request_id_headers
from .errors import Rejection, json_response
from .regions import REGION_KEY
from .state import Account, EmulatorState

__all__ = ["json_exchange", "record"]

_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
_SECRET_FIELDS = frozenset({"accessToken", "refreshToken", "clientSecret", "refresh_token"})


def _redacted(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: "<redacted>" if k in _SECRET_FIELDS else v for k, v in body.items()}
    return body


def record(
    state: EmulatorState, request: Request, raw: bytes, account: Account | None
) -> dict[str, Any]:
    """Append a log entry (newest last) and return it so the handler can add the outcome."""
    headers = {k: ("<redacted>" if k in _SECRET_HEADERS else v) for k, v in request.headers.items()}
    try:
        body: Any = _redacted(orjson.loads(raw)) if raw else None
    except orjson.JSONDecodeError:
        body = None
    entry: dict[str, Any] = {
        "method": request.method,
        "at": time.time(),  # when it arrived (epoch seconds): pacing tests read the spacing
        "path": request.url.path,
        "region": request.scope.get(REGION_KEY),  # the Q region host called (regions.py)
        "account": account.id if account else None,
        # who connected: the gateway, or the outbound proxy it went through (tests tell
        # proxies apart by the loopback address each one connects from)
        "client": request.client.host if request.client else None,
        "client_port": request.client.port if request.client else None,
        "headers": headers,
        "body": body,
        "body_bytes": len(raw),
        "status": None,
        "rejected": None,
        "fault": None,
    }
    state.requests.append(entry)
    return entry


Answer = Callable[[EmulatorState, dict[str, Any] | None, dict[str, Any]], dict[str, Any]]


async def json_exchange(request: Request, answer: Answer) -> Response:
    """A JSON-in, JSON-out call of the auth services (refresh, OIDC register / device start):
    logged, `answer(state, body, log entry)` run, a `Rejection` turned into its response."""
    state = emulator(request)
    raw = await request.body()
    entry = record(state, request, raw, None)
    try:
        body = answer(state, json_object(raw), entry)
    except Rejection as r:
        return r.logged(entry, request_id_headers(state))
    entry["status"] = 200
    return json_response(body, headers=request_id_headers(state))
