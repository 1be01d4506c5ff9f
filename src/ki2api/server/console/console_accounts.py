"""The console's account routes: the pool as `/health` shows it plus quota, region, profile and
models; add a login from a pasted token JSON (the code path of `ki2api accounts add`:
kiro/accounts/registry.add_account); disable, enable and refresh an account. The pool of this
worker sees every change at once; the other workers through the store (`pool.sync`). Never a
token in an answer or a log line."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ki2api.core.errors import GatewayError
from ki2api.kiro.accounts.importers import AccountSourceError
from ki2api.kiro.accounts.registry import AccountExists, add_account
from ki2api.kiro.endpoint import chat_region
from ki2api.server.console.console_api import ConsoleError, json_body, signed_in, state_change
from ki2api.server.console.console_views import account_view
from ki2api.server.services import Services

__all__ = ["router"]

router = APIRouter(prefix="/ui/api/accounts")

_MAX_TOKEN_JSON = 64 * 1024


def _views(services: Services, only: str | None = None) -> list[dict[str, Any]]:
    pool, settings, live, routes = (
        services.pool,
        services.settings,
        services.live,
        services.routes,
    )
    out: list[dict[str, Any]] = []
    for item in pool.status():
        account_id = str(item["id"])
        if only is not None and account_id != only:
            continue
        account = pool.get(account_id)
        login = item.get("login")
        arn = login.get("profile_arn") if isinstance(login, dict) else None
        region = chat_region(
            profile_arn=settings.kiro_profile_arn or (arn if isinstance(arn, str) else None),
            login_region=account.credentials.login_region if account is not None else None,
            override=settings.kiro_region,
        )
        models = live.offered_ids(account_id) if live and live.known(account_id) else ()
        network = routes.path_of(account_id).shown if routes is not None else None
        out.append(
            account_view(
                item,
                account.health if account is not None else None,
                region=region,
                models=models,
                network=network,
            )
        )
    return out


def _one(services: Services, account_id: str) -> dict[str, Any]:
    views = _views(services, account_id)
    if not views:
        raise ConsoleError(404, "not_found", f"No account {account_id!r}.")
    return views[0]


@router.get("")
async def accounts_list(request: Request) -> Response:
    services, _session = signed_in(request)
    await services.pool.sync()  # what the other workers learnt
    await services.pool.slots.observe()  # requests in flight of every worker, as /health
    return JSONResponse({"accounts": _views(services)})


def _token_json(body: dict[str, Any]) -> dict[str, Any]:
    text = body.get("token_json")
    if not isinstance(text, str) or not text.strip():
        raise ConsoleError(400, "invalid", "Paste the text of a Kiro token file in `token_json`.")
    if len(text) > _MAX_TOKEN_JSON:
        raise ConsoleError(400, "invalid", "The token JSON is too long for a Kiro token file.")
    try:
        data = json.loads(text)
    except ValueError:
        raise ConsoleError(400, "invalid", "The pasted text is not JSON.") from None
    if not isinstance(data, dict):
        raise ConsoleError(400, "invalid", "The pasted JSON must be an object (a token file).")
    refresh = data.get("refreshToken")
    if not isinstance(refresh, str) or not refresh:
        raise ConsoleError(400, "invalid", "The pasted JSON holds no refreshToken.")
    return data


@router.post("")
async def accounts_add(request: Request) -> Response:
    services = state_change(request)
    body = await json_body(request)
    data = _token_json(body)
    wanted = body.get("id")
    if wanted is not None and not isinstance(wanted, str):
        raise ConsoleError(400, "invalid", "`id` must be text: a-z, 0-9, _ and -.")
    try:
        record = await add_account(
            services.store,
            data,
            label="added from the console",
            account_id=(wanted or "").strip() or None,
        )
    except AccountExists as exc:
        raise ConsoleError(409, "exists", str(exc)) from None
    except AccountSourceError as exc:
        raise ConsoleError(400, "invalid", str(exc)) from None
    await services.pool.load()  # this worker's pool has it at once
    return JSONResponse({"account": _one(services, record.id)}, status_code=201)


@router.post("/{account_id}/{action}")
async def accounts_action(request: Request, account_id: str, action: str) -> Response:
    services = state_change(request)
    if action not in ("disable", "enable", "refresh"):
        raise ConsoleError(404, "not_found", f"Unknown action {action!r}.")
    pool = services.pool
    await pool.sync()
    account = pool.get(account_id)
    if account is None:
        raise ConsoleError(404, "not_found", f"No account {account_id!r}.")
    if action == "disable":
        await services.store.set_enabled(account_id, False, "disabled by user")
        await pool.load()  # this worker stops using it at once
    elif action == "enable":
        await pool.enable(account_id, why="enabled from the console")
    else:
        try:
            await account.credentials.refresh()
        except GatewayError as exc:
            raise ConsoleError(400, "invalid", f"The refresh failed: {exc.message}") from None
    return JSONResponse({"account": _one(services, account_id)})
