"""The console's JSON API under `/ui/api/`: sign-in, overview, requests, settings, client keys.

Off (404 `console_off`) without ADMIN_KEY. Every route but `login` needs the session cookie
(server/console/console_session.py); every POST also the CSRF header `x-ki2api-csrf` and no
foreign `Origin` / `sec-fetch-site: cross-site`. Errors are `{"error": {"code", "message"}}`
with a 4xx status, never a 500. The admin key, client keys and tokens are never logged or
returned (a new client key once, in its create / rotate answer). The account routes are
console_accounts.py's.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ki2api import __version__
from ki2api.server.chat import services_of
from ki2api.server.console.console_session import (
    COOKIE_NAME,
    SESSION_S,
    LoginThrottle,
    Session,
    check_admin_key,
    csrf_matches,
    issue_session,
    same_origin,
    verify_session,
)
from ki2api.server.console.console_views import (
    account_counts,
    clamp_window,
    key_view,
    request_view,
    settings_view,
    usage_series,
)
from ki2api.server.services import Services
from ki2api.state.base import ClientKeyRecord
from ki2api.state.client_key_rules import (
    check_name,
    hash_key,
    key_hint,
    new_key,
    parse_expiry,
    parse_models,
)

__all__ = [
    "ConsoleError",
    "console_error_response",
    "fallback",
    "json_body",
    "router",
    "signed_in",
    "state_change",
]

router = APIRouter(prefix="/ui/api")
fallback = APIRouter()  # included last: any other /ui/api/ path

CSRF_HEADER = "x-ki2api-csrf"
MAX_ROWS = 200_000
_INLINE_ROWS = 2_000  # more rows than this are shaped off the event loop


class ConsoleError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def console_error_response(exc: ConsoleError) -> JSONResponse:
    body = {"error": {"code": exc.code, "message": exc.message}}
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


def _admin_key(request: Request) -> str:
    key = services_of(request).settings.admin_key
    if not key:
        raise ConsoleError(404, "console_off", "The console is off: set ADMIN_KEY to turn it on.")
    return key


def _https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def _check_origin(request: Request) -> None:
    headers = request.headers
    if not same_origin(
        headers.get("origin"), headers.get("sec-fetch-site"), headers.get("host"), _https(request)
    ):
        raise ConsoleError(403, "origin", "Cross-site requests are refused.")


def signed_in(request: Request) -> tuple[Services, Session]:
    key = _admin_key(request)
    session = verify_session(key, request.cookies.get(COOKIE_NAME), time.time())
    if session is None:
        raise ConsoleError(401, "signed_out", "Sign in with the admin key.")
    return services_of(request), session


def state_change(request: Request) -> Services:
    """The services, for a signed-in, same-origin request carrying the session's CSRF token."""
    services, session = signed_in(request)
    _check_origin(request)
    if not csrf_matches(session, request.headers.get(CSRF_HEADER)):
        raise ConsoleError(403, "csrf", f"Missing or wrong {CSRF_HEADER} header.")
    return services


async def json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise ConsoleError(400, "invalid", "The body is not JSON.") from None
    if not isinstance(body, dict):
        raise ConsoleError(400, "invalid", "The body must be a JSON object.")
    return body


def _number(request: Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConsoleError(400, "invalid", f"`{name}` must be a number.") from None
    if value != value:  # NaN
        raise ConsoleError(400, "invalid", f"`{name}` must be a number.")
    return min(max(value, low), high)


def _throttle(request: Request) -> LoginThrottle:
    state = request.app.state
    found = getattr(state, "console_throttle", None)
    if not isinstance(found, LoginThrottle):
        found = state.console_throttle = LoginThrottle()
    return found


def _session_body(session: Session) -> dict[str, Any]:
    return {"csrf": session.csrf, "expires_at": session.expires_at, "version": __version__}


# sign-in ----------------------------------------------------------------------------------------


@router.post("/login")
async def login(request: Request) -> Response:
    key = _admin_key(request)
    _check_origin(request)  # login CSRF
    throttle, client = _throttle(request), request.client.host if request.client else "?"
    wait = throttle.retry_after(client, time.monotonic())
    if wait is not None:
        raise ConsoleError(
            429, "throttled", "Too many failed sign-ins: wait.", {"retry-after": str(int(wait))}
        )
    body = await json_body(request)
    if not check_admin_key(key, body.get("admin_key")):
        throttle.failed(client, time.monotonic())
        raise ConsoleError(401, "bad_admin_key", "That is not the admin key.")
    throttle.succeeded(client)
    session = issue_session(key, time.time())
    response = JSONResponse(_session_body(session))
    response.set_cookie(
        COOKIE_NAME,
        session.cookie,
        max_age=SESSION_S,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=_https(request),
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    state_change(request)
    response = Response(status_code=204)
    response.delete_cookie(
        COOKIE_NAME, path="/ui", httponly=True, samesite="strict", secure=_https(request)
    )
    return response


@router.get("/session")
async def session_info(request: Request) -> Response:
    _services, session = signed_in(request)
    return JSONResponse(_session_body(session))


# overview, requests, settings -------------------------------------------------------------------


async def _series(request: Request, services: Services, key: str | None) -> dict[str, Any]:
    window, bucket = clamp_window(
        _number(request, "window_s", 3600, 60, 2_592_000),
        _number(request, "bucket_s", 60, 10, 86_400),
    )
    now = time.time()
    rows = await services.store.usage_since(now - window, key=key, limit=MAX_ROWS)
    if len(rows) > _INLINE_ROWS:
        return await asyncio.to_thread(
            lambda: usage_series(rows, now=now, window_s=window, bucket_s=bucket)
        )
    return usage_series(rows, now=now, window_s=window, bucket_s=bucket)


@router.get("/overview")
async def overview(request: Request) -> Response:
    services, _session = signed_in(request)
    body = await _series(request, services, None)
    await services.pool.sync()
    body["accounts"] = account_counts(services.pool.status())
    return JSONResponse(body)


@router.get("/requests")
async def requests_list(request: Request) -> Response:
    services, _session = signed_in(request)
    limit = int(_number(request, "limit", 100, 1, 500))
    rows = await services.store.usage_rows(limit=limit)
    return JSONResponse({"requests": [request_view(r) for r in reversed(rows)]})


@router.get("/settings")
async def settings_list(request: Request) -> Response:
    services, _session = signed_in(request)
    return JSONResponse({"settings": settings_view(services.settings)})


# client keys ------------------------------------------------------------------------------------


async def _key_views(services: Services, only: str | None = None) -> list[dict[str, Any]]:
    now = time.time()
    usage = {u.group: u for u in await services.store.usage_summary(since=now - 86_400, by="key")}
    records = await services.store.list_client_keys()
    return [key_view(r, usage.get(r.name), now) for r in records if only in (None, r.name)]


async def _one_key(services: Services, name: str) -> dict[str, Any]:
    views = await _key_views(services, name)
    if not views:
        raise ConsoleError(404, "not_found", f"No key named {name!r}.")
    return views[0]


@router.get("/keys")
async def keys_list(request: Request) -> Response:
    services, _session = signed_in(request)
    return JSONResponse({"keys": await _key_views(services)})


def _limit(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConsoleError(400, "invalid", f"`{name}` must be a whole number, 0 or more.")
    return value or None  # 0: no limit, as `ki2api keys create`


def _new_record(body: dict[str, Any], key: str) -> ClientKeyRecord:
    name = body.get("name")
    problem = check_name(name) if isinstance(name, str) else "a key needs a name"
    if problem or not isinstance(name, str):
        raise ConsoleError(400, "invalid", problem or "a key needs a name")
    models, expires = body.get("models"), body.get("expires")
    if models is not None and not isinstance(models, str):
        raise ConsoleError(400, "invalid", "`models` must be text: claude-sonnet-*,claude-haiku-*")
    expires_at = None
    if isinstance(expires, str) and expires.strip():
        try:
            expires_at = parse_expiry(expires)
        except ValueError as exc:
            raise ConsoleError(400, "invalid", str(exc)) from None
    elif expires not in (None, ""):
        raise ConsoleError(400, "invalid", "`expires` must be YYYY-MM-DD or an ISO 8601 time.")
    now = time.time()
    return ClientKeyRecord(
        id="ck-" + secrets.token_hex(6),
        name=name,
        key_hash=hash_key(key),
        hint=key_hint(key),
        models=",".join(parse_models(models)) or None,
        expires_at=expires_at,
        created_at=now,
        updated_at=now,
        rpm=_limit(body, "rpm"),
        tpm=_limit(body, "tpm"),
        daily_tokens=_limit(body, "daily_tokens"),
        monthly_requests=_limit(body, "monthly_requests"),
    )


@router.post("/keys")
async def keys_create(request: Request) -> Response:
    services = state_change(request)
    key = new_key()
    record = _new_record(await json_body(request), key)
    if not await services.store.create_client_key(record):
        raise ConsoleError(409, "exists", f"A key named {record.name!r} exists (names stay taken).")
    return JSONResponse(
        {"key": key, "record": await _one_key(services, record.name)}, status_code=201
    )


_KEY_STATES = {"revoke": "revoked", "disable": "disabled", "enable": "active"}


@router.post("/keys/{name}/{action}")
async def keys_action(request: Request, name: str, action: str) -> Response:
    services = state_change(request)
    if action not in (*_KEY_STATES, "rotate"):
        raise ConsoleError(404, "not_found", f"Unknown action {action!r}.")
    await _one_key(services, name)
    store = services.store
    if action == "rotate":
        key = new_key()
        if not await store.rotate_client_key(name, hash_key(key), key_hint(key)):
            raise ConsoleError(400, "invalid", f"Key {name!r} is revoked: create a new one.")
        return JSONResponse({"key": key, "record": await _one_key(services, name)})
    if not await store.set_client_key_state(name, _KEY_STATES[action]):
        raise ConsoleError(400, "invalid", f"Key {name!r} is revoked for good.")
    return JSONResponse({"record": await _one_key(services, name)})


@router.get("/keys/{name}/usage")
async def keys_usage(request: Request, name: str) -> Response:
    services, _session = signed_in(request)
    await _one_key(services, name)
    return JSONResponse(await _series(request, services, name))


@fallback.api_route(
    "/ui/api/{rest:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
)
async def unknown(request: Request, rest: str) -> Response:
    _admin_key(request)
    raise ConsoleError(404, "not_found", f"Unknown path {request.url.path}.")
