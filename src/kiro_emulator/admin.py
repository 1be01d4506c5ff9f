"""The `/_emulator` control surface (docs/emulator.md: Endpoints; Account behaviour and faults)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .common import emulator, json_object
from .errors import json_response
from .state import Account, EmulatorState

__all__ = ["routes"]

DEFAULT_REQUEST_LIMIT = 100


def _error(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def _account(state: EmulatorState, request: Request) -> Account | None:
    return state.accounts.get(request.path_params["account_id"])


async def create_accounts(request: Request) -> Response:
    state = emulator(request)
    body = json_object(await request.body())
    if body is None:
        return _error(400, "body must be a JSON object")
    count = body.get("count", 1)
    behaviour = body.get("behaviour") or {}
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1000:
        return _error(400, "count must be an integer 1..1000")
    if not isinstance(behaviour, dict):
        return _error(400, "behaviour must be an object")
    method = str(body.get("auth_method", "social"))
    # IdC logins are strict by default, as real ones (docs/kiro-protocol.md §1.3)
    strict = body.get("strict_profile_arn", method.strip().lower() == "idc")
    if not isinstance(strict, bool):
        return _error(400, "strict_profile_arn must be a boolean")
    api_key = body.get("api_key", False)  # also give each a Kiro API key (ksk_…)
    if not isinstance(api_key, bool):
        return _error(400, "api_key must be a boolean")
    try:
        made = state.add_accounts(
            count, method, behaviour, strict_profile_arn=strict, api_key=api_key
        )
    except ValueError as exc:
        return _error(400, str(exc))
    return json_response({"accounts": [state.describe(a) for a in made]})


async def list_accounts(request: Request) -> Response:
    state = emulator(request)
    return json_response({"accounts": [state.describe(a) for a in state.accounts.values()]})


async def patch_account(request: Request) -> Response:
    state = emulator(request)
    account = _account(state, request)
    if account is None:
        return _error(404, "no such account")
    body = json_object(await request.body())
    changes: Any = body.get("behaviour") if body else None
    if not isinstance(changes, dict):
        return _error(400, 'body must be {"behaviour": {...}}')
    try:
        state.set_behaviour(account, changes)
    except ValueError as exc:
        return _error(400, str(exc))
    return json_response(state.describe(account))


async def expire_tokens(request: Request) -> Response:
    """Extension: make the account's access tokens expired now (to test refresh-on-403)."""
    state = emulator(request)
    account = _account(state, request)
    if account is None:
        return _error(404, "no such account")
    state.expire_tokens(account)
    return json_response(state.describe(account))


async def revoke_key(request: Request) -> Response:
    """Extension: revoke the account's API key (Kiro then refuses it as an invalid bearer)."""
    state = emulator(request)
    account = _account(state, request)
    if account is None:
        return _error(404, "no such account")
    if not state.revoke_api_key(account):
        return _error(400, "this account has no API key")
    return json_response(state.describe(account))


async def requests(request: Request) -> Response:
    state = emulator(request)
    raw = request.query_params.get("limit", "")
    limit = int(raw) if raw.isdigit() else DEFAULT_REQUEST_LIMIT
    account = request.query_params.get("account")  # only this account's (before the limit)
    items = [r for r in state.requests if account is None or r.get("account") == account]
    return json_response({"requests": items[len(items) - limit :] if limit else []})


async def stats(request: Request) -> Response:
    return json_response(emulator(request).stats())


async def reset(request: Request) -> Response:
    emulator(request).reset()
    return json_response({"ok": True})


def routes() -> list[Route]:
    return [
        Route("/_emulator/accounts", create_accounts, methods=["POST"]),
        Route("/_emulator/accounts", list_accounts, methods=["GET"]),
        Route("/_emulator/accounts/{account_id}", patch_account, methods=["PATCH"]),
        Route("/_emulator/accounts/{account_id}/expire", expire_tokens, methods=["POST"]),
        Route("/_emulator/accounts/{account_id}/revoke_key", revoke_key, methods=["POST"]),
        Route("/_emulator/requests", requests, methods=["GET"]),
        Route("/_emulator/stats", stats, methods=["GET"]),
        Route("/_emulator/reset", reset, methods=["POST"]),
    ]
