"""The Builder ID login without the IDE: SSO-OIDC device code (docs/kiro-protocol.md §1.2).

1. RegisterClient: `POST {oidc}/client/register` `{clientName: "Kiro IDE", clientType: "public",
   scopes, grantTypes, issuerUrl}` -> `{clientId, clientSecret, clientSecretExpiresAt}`;
2. StartDeviceAuthorization: `POST {oidc}/device_authorization` `{clientId, clientSecret,
   startUrl}` -> `{deviceCode, userCode, verificationUri, verificationUriComplete, expiresIn,
   interval}`; the user opens the URL and confirms the code;
3. CreateToken: `POST {oidc}/token` `{clientId, clientSecret, grantType:
   "urn:ietf:params:oauth:grant-type:device_code", deviceCode}`, polled every `interval`
   seconds: 400 `authorization_pending` (wait), `slow_down` (wait 5 s longer from now on),
   `expired_token` / `access_denied` (stop); 200 gives the tokens (docs/kiro-protocol.md §1.2).

`poll_decision` is the pure rule; `DeviceLogin` makes the calls. The result is written as the
IDE writes an IdC login (`login_tokens.py`). Nothing here logs a token, secret or device code.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.http_client import map_transport_errors
from ki2api.kiro.login.refresh import RefreshedTokens, parse_refresh_response
from ki2api.kiro.login.token_file import ClientRegistration

__all__ = [
    "BUILDER_ID_START_URL",
    "DEVICE_GRANT",
    "SCOPES",
    "SLOW_DOWN_STEP_S",
    "DeviceAuthorization",
    "DeviceLogin",
    "PollDecision",
    "Registered",
    "poll_decision",
]

BUILDER_ID_START_URL = "https://view.awsapps.com/start"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SCOPES = (
    "codewhisperer:completions",
    "codewhisperer:analysis",
    "codewhisperer:conversations",
    "codewhisperer:transformations",
    "codewhisperer:taskassist",
)
SLOW_DOWN_STEP_S = 5.0  # each slow_down adds 5 s to the interval for good (§1.2)
_WHAT = "AWS SSO-OIDC"
_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Registered:
    """A registered OIDC client (the IdC companion file's content)."""

    registration: ClientRegistration
    expires_at: float | None  # clientSecretExpiresAt (epoch seconds)


@dataclass(frozen=True)
class DeviceAuthorization:
    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float


@dataclass(frozen=True)
class PollDecision:
    """`wait` seconds before the next poll, or `stop` with `why` (the user's message)."""

    stop: bool
    wait: float = 0.0
    interval: float = 0.0  # the interval from now on
    why: str = ""


def poll_decision(
    error: str | None, interval: float, step: float = SLOW_DOWN_STEP_S
) -> PollDecision:
    """What a CreateToken answer without tokens means for the polling (docs/kiro-protocol.md
    §1.2: the OAuth device grant's rules)."""
    if error == "authorization_pending":
        return PollDecision(False, interval, interval)
    if error == "slow_down":
        return PollDecision(False, interval + step, interval + step)
    reasons = {
        "expired_token": "the code expired before it was confirmed; run `ki2api login` again",
        "access_denied": "the login was denied in the browser",
    }
    why = reasons.get(error or "", f"AWS SSO-OIDC refused the login ({error or 'no reason'})")
    return PollDecision(True, why=why)


def _fail(message: str) -> GatewayError:
    return GatewayError(ErrorKind.UPSTREAM_AUTH, message)


def _json(response: httpx.Response, call: str) -> dict[str, Any]:
    try:
        body = json.loads(response.text)
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        code = body.get("error") if isinstance(body, dict) else None
        raise _fail(f"{_WHAT} {call} answered HTTP {response.status_code} ({code or 'no code'})")
    return body


def _text(body: dict[str, Any], key: str, call: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise _fail(f"{_WHAT} {call} answered without {key}")
    return value


def _number(value: object, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return default


class DeviceLogin:
    """The three calls of the device flow against one OIDC host. `scale` multiplies every
    wait (1.0 for real use; tests shrink it)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        oidc_base: str,
        *,
        start_url: str = BUILDER_ID_START_URL,
        scale: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._http = http
        self._base = oidc_base.rstrip("/")
        self.start_url = start_url
        self._scale = max(0.0, scale)
        self._sleep = sleep

    async def _post(self, path: str, body: dict[str, Any], call: str) -> httpx.Response:
        with map_transport_errors(f"{_WHAT} ({call})"):
            return await self._http.post(f"{self._base}{path}", json=body, timeout=_TIMEOUT_S)

    async def register(self) -> Registered:
        body = {
            "clientName": "Kiro IDE",
            "clientType": "public",
            "scopes": list(SCOPES),
            "grantTypes": [DEVICE_GRANT, "refresh_token"],
            "issuerUrl": self.start_url,
        }
        answer = _json(
            await self._post("/client/register", body, "RegisterClient"), "RegisterClient"
        )
        reg = ClientRegistration(
            client_id=_text(answer, "clientId", "RegisterClient"),
            client_secret=_text(answer, "clientSecret", "RegisterClient"),
        )
        expires = answer.get("clientSecretExpiresAt")
        return Registered(reg, float(expires) if isinstance(expires, int | float) else None)

    async def start(self, client: Registered) -> DeviceAuthorization:
        reg = client.registration
        body = {
            "clientId": reg.client_id,
            "clientSecret": reg.client_secret,
            "startUrl": self.start_url,
        }
        call = "StartDeviceAuthorization"
        answer = _json(await self._post("/device_authorization", body, call), call)
        complete = answer.get("verificationUriComplete")
        return DeviceAuthorization(
            device_code=_text(answer, "deviceCode", call),
            user_code=_text(answer, "userCode", call),
            verification_uri=_text(answer, "verificationUri", call),
            verification_uri_complete=complete if isinstance(complete, str) else None,
            expires_in=_number(answer.get("expiresIn"), 600.0),
            interval=_number(answer.get("interval"), 5.0),
        )

    async def wait_for_token(
        self, client: Registered, auth: DeviceAuthorization
    ) -> RefreshedTokens:
        """Poll CreateToken until the user confirmed the code (or it expired or was denied)."""
        reg = client.registration
        body = {
            "clientId": reg.client_id,
            "clientSecret": reg.client_secret,
            "grantType": DEVICE_GRANT,
            "deviceCode": auth.device_code,
        }
        interval = auth.interval
        deadline = time.monotonic() + auth.expires_in * self._scale
        await self._sleep(interval * self._scale)
        while True:
            response = await self._post("/token", body, "CreateToken")
            if response.status_code == 200:
                return parse_refresh_response(response.text, what=_WHAT)
            decision = poll_decision(_error_of(response), interval)
            if decision.stop or time.monotonic() > deadline:
                raise _fail(f"Builder ID login failed: {decision.why or 'the code expired'}")
            interval = decision.interval
            await self._sleep(decision.wait * self._scale)


def _error_of(response: httpx.Response) -> str | None:
    if response.status_code not in (400, 401):
        return f"HTTP {response.status_code}"
    try:
        body = json.loads(response.text)
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) else None
