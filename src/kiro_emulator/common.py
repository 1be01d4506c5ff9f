"""Small request helpers shared by the route modules."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from .regions import REGION_KEY
from .state import EmulatorState

__all__ = ["bearer", "emulator", "is_api_key", "json_object", "request_id_headers"]


def is_api_key(token: str | None) -> bool:
    """A Kiro API key (docs/kiro-protocol.md §1.4) rather than a login's access token."""
    return bool(token) and str(token).startswith("ksk_")


def emulator(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


def bearer(request: Request) -> str | None:
    """The bearer token; None also when it belongs to an account of another Q region than the
    host called (real Kiro answers that with 403 "bearer token invalid": regions.py), and for
    an API key sent without `tokentype: API_KEY` (or that header with another token)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    if not token:
        return None
    # a Kiro API key is valid only with `tokentype: API_KEY`, and that header only with one
    if is_api_key(token) != (request.headers.get("tokentype", "").upper() == "API_KEY"):
        return None
    region = request.scope.get(REGION_KEY)
    if region is not None:
        account = emulator(request).authenticate(token)
        if account is not None and account.q_region != region:
            return None
    return token


def request_id_headers(state: EmulatorState) -> dict[str, str]:
    return {"x-amzn-requestid": state.new_uuid()}


def json_object(raw: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is not one."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None
