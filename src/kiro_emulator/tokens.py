"""Token refresh endpoints: social `POST /refreshToken` (docs/kiro-protocol.md §2.1) and the IdC /
Builder ID SSO-OIDC CreateToken `POST /token` with camelCase JSON (§2.2); its device_code grant
(a Builder ID login) is answered by `signin.py`."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .errors import Rejection
from .reqlog import json_exchange
from .signin import DEVICE_GRANT, device_token
from .state import Account, EmulatorState

__all__ = ["oidc_create_token", "social_refresh"]


def _oidc_error(status: int, error: str, description: str, kind: str) -> Rejection:
    return Rejection(status, {"error": error, "error_description": description}, kind, error)


def _expires_in(state: EmulatorState, account: Account) -> int:
    return max(0, round(account.access_expires - state.clock()))


def _social(
    state: EmulatorState, body: dict[str, Any] | None, entry: dict[str, Any]
) -> dict[str, Any]:
    token = body.get("refreshToken") if body else None
    if not isinstance(token, str) or not token:
        raise Rejection(
            400,
            {"error": "invalid_request", "message": "refreshToken is required"},
            "InvalidRequestException",
            "no refreshToken",
        )
    account = state.account_for_refresh(token, "social")
    entry["account"] = account.id
    state.refresh(account)
    return {
        "accessToken": account.access_token,
        "expiresIn": _expires_in(state, account),
        "profileArn": account.profile_arn,
        "refreshToken": account.refresh_token,
    }


def _client_account(state: EmulatorState, client_id: str, secret: str) -> Account:
    for account in state.accounts.values():
        reg = account.registration
        if reg is not None and reg.client_id == client_id and reg.client_secret == secret:
            return account
    raise _oidc_error(401, "invalid_client", "Invalid client provided", "InvalidClientException")


def _oidc(
    state: EmulatorState, body: dict[str, Any] | None, entry: dict[str, Any]
) -> dict[str, Any]:
    fields = ("clientId", "clientSecret", "grantType", "refreshToken")
    raw = [body.get(f) if body else None for f in fields]
    values = [v if isinstance(v, str) else "" for v in raw]
    missing = [f for f, v in zip(fields, values, strict=True) if not v]
    if missing:
        raise _oidc_error(
            400, "invalid_request", f"Missing {', '.join(missing)}", "InvalidRequestException"
        )
    client_id, secret, grant, token = values
    client = _client_account(state, client_id, secret)
    entry["account"] = client.id
    if grant != "refresh_token":
        raise _oidc_error(
            400,
            "unsupported_grant_type",
            f"Unsupported grant type: {grant}",
            "UnsupportedGrantTypeException",
        )
    account = state.account_for_refresh(token, "idc")
    if account is not client:
        raise _oidc_error(
            400, "invalid_grant", "Invalid refresh token provided", "InvalidGrantException"
        )
    state.refresh(account)
    return {
        "accessToken": account.access_token,
        "expiresIn": _expires_in(state, account),
        "idToken": None,
        "issuedTokenType": None,
        "refreshToken": account.refresh_token,
        "tokenType": "Bearer",
        "aws_sso_app_session_id": None,
        "originSessionId": None,
    }


async def _handle(request: Request, kind: str) -> Response:
    def answer(state: EmulatorState, body: dict[str, Any] | None, entry: Any) -> dict[str, Any]:
        if kind == "idc" and body is not None and body.get("grantType") == DEVICE_GRANT:
            return device_token(state, request.app.state.signin, body, entry)  # signin.py
        return (_social if kind == "social" else _oidc)(state, body, entry)

    return await json_exchange(request, answer)


async def social_refresh(request: Request) -> Response:
    return await _handle(request, "social")


async def oidc_create_token(request: Request) -> Response:
    return await _handle(request, "idc")
