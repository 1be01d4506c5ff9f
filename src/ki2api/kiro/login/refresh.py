"""The two Kiro token-refresh calls and how their answers map onto `GatewayError` (network
failures: `http_client.map_transport_errors`).

Social (docs/kiro-protocol.md §2.1): `POST {auth_base}/refreshToken` `{"refreshToken"}` ->
`{accessToken, expiresIn, profileArn?, refreshToken?}`.
IdC / Builder ID (§2.2, SSO-OIDC CreateToken): `POST {oidc_base}/token` camelCase
`{clientId, clientSecret, grantType: "refresh_token", refreshToken}` ->
`{accessToken, expiresIn, refreshToken?}`.

Error messages never contain a token or the upstream body (it could echo one).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.http_client import map_transport_errors
from ki2api.kiro.login.token_file import ClientRegistration

__all__ = [
    "RELOGIN_HINT",
    "RefreshedTokens",
    "classify_refresh_failure",
    "parse_refresh_response",
    "refresh_idc",
    "refresh_social",
]

RELOGIN_HINT = (
    "Sign in to Kiro again (open the Kiro IDE and log in, or replace the token file / "
    "KIRO_REFRESH_TOKEN), then retry."
)
_ERROR_CODE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.:#-]{0,127}")


@dataclass(frozen=True)
class RefreshedTokens:
    """A successful refresh. `refresh_token`/`profile_arn` are None when the answer had none."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_in: float | None
    profile_arn: str | None


def _error_code(body: str) -> str | None:
    """The OAuth-style `error` (or `__type`/`code`) identifier of an error body, if it has one."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for key in ("error", "__type", "code"):
            value = parsed.get(key)
            if isinstance(value, str) and _ERROR_CODE_RE.fullmatch(value):
                return value.rsplit("#", 1)[-1]
    return "invalid_grant" if "invalid_grant" in body else None


def classify_refresh_failure(status: int, body: str, *, what: str) -> GatewayError:
    """Map a non-200 refresh answer to the taxonomy. `what` names the service for the message."""
    code = _error_code(body)
    detail = f"HTTP {status}" + (f", {code}" if code else "")
    if status in (400, 401, 403):
        return GatewayError(
            ErrorKind.UPSTREAM_AUTH,
            f"Kiro refused to renew the login ({what} answered {detail}): the saved login has "
            f"expired or was revoked. {RELOGIN_HINT}",
            upstream_status=status,
            code=code,
        )
    if status == 429:
        return GatewayError(
            ErrorKind.RATE_LIMITED,
            f"{what} is rate limiting token refreshes ({detail}); try again shortly.",
            retryable=True,
            upstream_status=status,
            code=code,
        )
    if status >= 500:
        return GatewayError(
            ErrorKind.UPSTREAM_UNAVAILABLE,
            f"{what} is unavailable ({detail}); the token refresh will be retried.",
            retryable=True,
            upstream_status=status,
            code=code,
        )
    return GatewayError(
        ErrorKind.UPSTREAM_ERROR,
        f"{what} answered the token refresh with unexpected {detail}.",
        upstream_status=status,
        code=code,
    )


def _protocol_error(what: str, problem: str) -> GatewayError:
    return GatewayError(
        ErrorKind.UPSTREAM_PROTOCOL, f"{what} answered the token refresh with {problem}."
    )


def _expires_in(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _opt_str(payload: dict[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) and value else None


def parse_refresh_response(text: str, *, what: str) -> RefreshedTokens:
    """Parse a 200 refresh answer; raises `UPSTREAM_PROTOCOL` if it holds no access token."""
    try:
        payload = json.loads(text)
    except ValueError:
        raise _protocol_error(what, "a body that is not JSON") from None
    if not isinstance(payload, dict):
        raise _protocol_error(what, "a JSON value that is not an object")
    access = _opt_str(payload, "accessToken")
    if access is None:
        raise _protocol_error(what, "no accessToken")
    return RefreshedTokens(
        access_token=access,
        refresh_token=_opt_str(payload, "refreshToken"),
        expires_in=_expires_in(payload.get("expiresIn")),
        profile_arn=_opt_str(payload, "profileArn"),
    )


async def _post(
    http: httpx.AsyncClient, url: str, body: dict[str, str], *, what: str, timeout: float
) -> RefreshedTokens:
    # network failures: the shared httpx table (a timeout is UPSTREAM_TIMEOUT); all of them
    # are passing faults (kiro/accounts/policy.py `blame`), never the account's
    with map_transport_errors(f"{what} (token refresh)"):
        response = await http.post(url, json=body, timeout=timeout)
    if response.status_code != 200:
        raise classify_refresh_failure(response.status_code, response.text, what=what)
    return parse_refresh_response(response.text, what=what)


async def refresh_social(
    http: httpx.AsyncClient, *, auth_base: str, refresh_token: str, timeout: float = 30.0
) -> RefreshedTokens:
    """Refresh a social (Google / GitHub) login at the Kiro auth service."""
    url = f"{auth_base.rstrip('/')}/refreshToken"
    body = {"refreshToken": refresh_token}
    return await _post(http, url, body, what="the Kiro auth service", timeout=timeout)


async def refresh_idc(
    http: httpx.AsyncClient,
    *,
    oidc_base: str,
    registration: ClientRegistration,
    refresh_token: str,
    timeout: float = 30.0,
) -> RefreshedTokens:
    """Refresh an IdC / Builder ID login with SSO-OIDC CreateToken."""
    url = f"{oidc_base.rstrip('/')}/token"
    body = {
        "clientId": registration.client_id,
        "clientSecret": registration.client_secret,
        "grantType": "refresh_token",
        "refreshToken": refresh_token,
    }
    return await _post(http, url, body, what="AWS SSO-OIDC", timeout=timeout)
