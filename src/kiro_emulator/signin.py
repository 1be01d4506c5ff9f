"""Logging in without the IDE (docs/kiro-protocol.md §1.2, §1.4; docs/emulator.md: "Logins").

The Builder ID device flow of AWS SSO-OIDC: `POST /client/register` (RegisterClient),
`POST /device_authorization` (StartDeviceAuthorization), then `POST /token` with
`grantType: "urn:ietf:params:oauth:grant-type:device_code"` (CreateToken; `tokens.py` hands
those here), which answers 400 `authorization_pending` until the user code is approved
(`POST /_emulator/device/approve`, or by itself after `auto_approve_after` polls),
`slow_down` to the first `slow_down_polls` polls, `expired_token` after `expires_in`, and
`access_denied` when denied. An approved authorization makes a new IdC account whose client
registration is the one registered, so later refreshes at `POST /token` work.

The social login: `GET /login?idp=&redirect_uri=&code_challenge=&code_challenge_method=S256
&state=` "logs in" at once (a new social account) and redirects (302) to `redirect_uri` with
`code` and `state` (or `error=access_denied` after `POST /_emulator/social {"deny": true}`);
`POST /oauth/token {code, code_verifier, redirect_uri}` checks the PKCE verifier (S256) and
answers `{accessToken, refreshToken, expiresIn, profileArn}`. Codes are single use.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from . import credentials as cred
from .common import emulator, json_object, request_id_headers
from .errors import Rejection, json_response
from .reqlog import json_exchange, record
from .state import Account, EmulatorState, Registration

__all__ = ["DEVICE_GRANT", "Signin", "device_token", "routes"]

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
_REGISTRATION_TTL_S = 90 * 86_400
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass
class _Client:
    client_id: str
    secret: str = field(repr=False)
    expires_at: float


@dataclass
class _Device:
    device_code: str = field(repr=False)
    user_code: str
    client_id: str
    expires_at: float
    polls: int = 0
    poll_at: list[float] = field(default_factory=list)  # when each poll came (emulator clock)
    approved: bool = False
    denied: bool = False
    issued: bool = False


@dataclass
class _Code:
    challenge: str
    redirect_uri: str
    account_id: str


@dataclass
class Signin:
    """What the login flows remember, and their test controls."""

    interval: float = 1.0  # the `interval` StartDeviceAuthorization answers (seconds)
    expires_in: int = 600  # how long a device authorization lives
    slow_down_polls: int = 0  # answer `slow_down` to the first N polls of each authorization
    auto_approve_after: int | None = None  # approve by itself after N polls (None: never)
    deny_social: bool = False  # the next social login is refused (error=access_denied)
    clients: dict[str, _Client] = field(default_factory=dict)
    devices: dict[str, _Device] = field(default_factory=dict)  # by device code
    codes: dict[str, _Code] = field(default_factory=dict)


def _signin(request: Request) -> Signin:
    found: Signin = request.app.state.signin
    return found


def _oidc_error(error: str, description: str, kind: str, status: int = 400) -> Rejection:
    return Rejection(status, {"error": error, "error_description": description}, kind, error)


def _text(body: dict[str, Any] | None, key: str) -> str:
    value = body.get(key) if body else None
    return value if isinstance(value, str) else ""


def _client(signin: Signin, body: dict[str, Any] | None) -> _Client:
    client = signin.clients.get(_text(body, "clientId"))
    if client is None or not secrets.compare_digest(client.secret, _text(body, "clientSecret")):
        raise _oidc_error(
            "invalid_client", "Invalid client provided", "InvalidClientException", 401
        )
    return client


def _register(state: EmulatorState, signin: Signin, body: dict[str, Any] | None) -> dict[str, Any]:
    if not _text(body, "clientName") or _text(body, "clientType") != "public":
        raise _oidc_error(
            "invalid_request",
            "clientName and clientType public are required",
            "InvalidRequestException",
        )
    now = state.clock()
    client = _Client(
        secrets.token_urlsafe(16), "sec" + secrets.token_urlsafe(64), now + _REGISTRATION_TTL_S
    )
    signin.clients[client.client_id] = client
    return {
        "clientId": client.client_id,
        "clientSecret": client.secret,
        "clientIdIssuedAt": int(now),
        "clientSecretExpiresAt": int(client.expires_at),
    }


def _user_code() -> str:
    letters = "BCDFGHJKLMNPQRSTVWXZ"
    raw = "".join(secrets.choice(letters) for _ in range(8))
    return f"{raw[:4]}-{raw[4:]}"


def _start(
    state: EmulatorState, signin: Signin, body: dict[str, Any] | None, base: str
) -> dict[str, Any]:
    client = _client(signin, body)
    if not _text(body, "startUrl"):
        raise _oidc_error("invalid_request", "startUrl is required", "InvalidRequestException")
    device = _Device(
        "dc-" + secrets.token_urlsafe(32),
        _user_code(),
        client.client_id,
        state.clock() + signin.expires_in,
    )
    signin.devices[device.device_code] = device
    return {
        "deviceCode": device.device_code,
        "userCode": device.user_code,
        "verificationUri": f"{base}device",
        "verificationUriComplete": f"{base}device?user_code={device.user_code}",
        "expiresIn": signin.expires_in,
        "interval": signin.interval,
    }


def _new_idc_account(state: EmulatorState, client: _Client) -> Account:
    reg = Registration(client.client_id, client.secret, client.expires_at, cred.client_id_hash())
    return state.add_accounts(1, "idc", registration=reg)[0]


def _poll(device: _Device, signin: Signin, now: float) -> None:
    """Raise the answer of a poll that gets no token yet."""
    device.polls += 1
    device.poll_at.append(now)
    if device.issued:
        raise _oidc_error("invalid_grant", "Device code already used", "InvalidGrantException")
    if now >= device.expires_at:
        raise _oidc_error("expired_token", "Device code has expired", "ExpiredTokenException")
    if device.denied:
        raise _oidc_error("access_denied", "Authorization denied", "AccessDeniedException")
    if device.polls <= signin.slow_down_polls:
        raise _oidc_error("slow_down", "Client is polling too fast", "SlowDownException")
    if signin.auto_approve_after is not None and device.polls > signin.auto_approve_after:
        device.approved = True
    if not device.approved:
        raise _oidc_error(
            "authorization_pending", "Authorization is pending", "AuthorizationPendingException"
        )


def device_token(
    state: EmulatorState, signin: Signin, body: dict[str, Any] | None, entry: dict[str, Any]
) -> dict[str, Any]:
    """CreateToken with the device_code grant (called by `tokens.oidc_create_token`)."""
    client = _client(signin, body)
    device = signin.devices.get(_text(body, "deviceCode"))
    if device is None or device.client_id != client.client_id:
        raise _oidc_error("invalid_grant", "Invalid device code", "InvalidGrantException")
    _poll(device, signin, state.clock())
    device.issued = True
    account = _new_idc_account(state, client)
    entry["account"] = account.id
    return {
        "accessToken": account.access_token,
        "expiresIn": max(0, round(account.access_expires - state.clock())),
        "idToken": None,
        "refreshToken": account.refresh_token,
        "tokenType": "Bearer",
    }


def _loopback_redirect(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme == "kiro" or (parts.scheme == "http" and parts.hostname in _LOOPBACK)


def _challenge_of(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


async def social_login(request: Request) -> Response:
    """The browser's login page: logs in at once and redirects to the callback."""
    state, signin, q = emulator(request), _signin(request), request.query_params
    entry = record(state, request, b"", None)
    redirect, challenge = q.get("redirect_uri", ""), q.get("code_challenge", "")
    if (
        q.get("idp") not in ("Google", "Github")
        or not _loopback_redirect(redirect)
        or q.get("code_challenge_method") != "S256"
        or len(challenge) < 43
    ):
        entry["status"], entry["rejected"] = 400, "bad login request"
        return json_response({"error": "invalid_request"}, 400)
    if signin.deny_social:
        signin.deny_social = False
        query = {"error": "access_denied", "state": q.get("state", "")}
    else:
        account = state.add_accounts(1, "social")[0]
        entry["account"] = account.id
        code = "code-" + secrets.token_urlsafe(24)
        signin.codes[code] = _Code(challenge, redirect, account.id)
        query = {"code": code, "state": q.get("state", "")}
    entry["status"] = 302
    sep = "&" if "?" in redirect else "?"
    return RedirectResponse(f"{redirect}{sep}{urlencode(query)}", status_code=302)


async def social_token(request: Request) -> Response:
    """`POST /oauth/token`: a social login's code (and its PKCE verifier) for tokens."""
    state, signin = emulator(request), _signin(request)
    raw = await request.body()
    entry = record(state, request, raw, None)
    body = json_object(raw)
    grant = signin.codes.pop(_text(body, "code"), None)
    verifier = _text(body, "code_verifier")
    problem = (
        "unknown or used code"
        if grant is None
        else "code_verifier does not match"
        if _challenge_of(verifier) != grant.challenge
        else "redirect_uri does not match"
        if _text(body, "redirect_uri") != grant.redirect_uri
        else None
    )
    account = state.accounts.get(grant.account_id) if grant is not None else None
    if problem is not None or account is None:
        entry["status"], entry["rejected"] = 400, problem
        answer = {"error": "invalid_grant", "message": "Invalid authorization code"}
        return json_response(answer, 400, request_id_headers(state))
    entry["account"], entry["status"] = account.id, 200
    body_out = {
        "accessToken": account.access_token,
        "refreshToken": account.refresh_token,
        "expiresIn": max(0, round(account.access_expires - state.clock())),
        "profileArn": account.profile_arn,
    }
    return json_response(body_out, headers=request_id_headers(state))


async def _oidc_call(request: Request, which: str) -> Response:
    signin = _signin(request)

    def answer(state: EmulatorState, body: dict[str, Any] | None, entry: Any) -> dict[str, Any]:
        if which == "register":
            return _register(state, signin, body)
        return _start(state, signin, body, str(request.base_url))

    return await json_exchange(request, answer)


async def register_client(request: Request) -> Response:
    return await _oidc_call(request, "register")


async def start_device(request: Request) -> Response:
    return await _oidc_call(request, "start")


_SETTINGS = {
    "interval": (int, float),
    "expires_in": (int,),
    "slow_down_polls": (int,),
    "auto_approve_after": (int, type(None)),
}


async def device_settings(request: Request) -> Response:
    """`POST /_emulator/device`: interval, expires_in, slow_down_polls, auto_approve_after."""
    signin = _signin(request)
    body = json_object(await request.body()) or {}
    for key, value in body.items():
        kinds = _SETTINGS.get(key)
        if kinds is None or isinstance(value, bool) or not isinstance(value, kinds):
            return json_response({"error": f"bad device setting {key!r}"}, 400)
        setattr(signin, key, value)
    return json_response({k: getattr(signin, k) for k in _SETTINGS})


async def device_view(request: Request) -> Response:
    """`GET /_emulator/device`: the settings and every authorization (no device codes)."""
    signin = _signin(request)
    items = [
        {
            "user_code": d.user_code,
            "polls": d.polls,
            "poll_at": d.poll_at,
            "approved": d.approved,
            "denied": d.denied,
            "issued": d.issued,
        }
        for d in signin.devices.values()
    ]
    return json_response({**{k: getattr(signin, k) for k in _SETTINGS}, "authorizations": items})


async def device_approve(request: Request) -> Response:
    """`POST /_emulator/device/approve {"user_code", "deny"?}`: the user's answer."""
    signin = _signin(request)
    body = json_object(await request.body())
    code = _text(body, "user_code").strip().upper()
    for device in signin.devices.values():
        if device.user_code == code:
            deny = bool(body and body.get("deny"))
            device.approved, device.denied = not deny, deny
            return json_response({"user_code": code, "approved": not deny, "polls": device.polls})
    return json_response({"error": "no pending authorization with that user code"}, 404)


async def social_settings(request: Request) -> Response:
    """`POST /_emulator/social {"deny": true}`: refuse the next social login."""
    body = json_object(await request.body()) or {}
    deny = body.get("deny", False)
    if not isinstance(deny, bool):
        return json_response({"error": "deny must be a boolean"}, 400)
    _signin(request).deny_social = deny
    return json_response({"deny": deny})


def routes() -> list[Route]:
    return [
        Route("/client/register", register_client, methods=["POST"]),
        Route("/device_authorization", start_device, methods=["POST"]),
        Route("/login", social_login, methods=["GET"]),
        Route("/oauth/token", social_token, methods=["POST"]),
        Route("/_emulator/device", device_settings, methods=["POST"]),
        Route("/_emulator/device", device_view, methods=["GET"]),
        Route("/_emulator/device/approve", device_approve, methods=["POST"]),
        Route("/_emulator/social", social_settings, methods=["POST"]),
    ]
