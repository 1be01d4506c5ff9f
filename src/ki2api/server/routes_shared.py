"""Routes both dialects share: `/v1/models` (list and retrieve) and `/health`.

The model objects carry the fields of both APIs' model objects, so the OpenAI and the Anthropic
SDKs each read them; an unknown model is a 404 in OpenAI's wording, rendered in the client's
dialect (`app.render_error`: Anthropic's JSON for a client that sends `anthropic-version` or
authenticates with `x-api-key`). A store key with model patterns (`ki2api keys --models`) sees
only the models it may use: the others are left out of the list and are a 404 to retrieve.
"""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ki2api import __version__
from ki2api.core.errors import GatewayError
from ki2api.core.models import ModelInfo
from ki2api.frontends.openai.error_json import model_not_found
from ki2api.server.auth import identity
from ki2api.server.chat import authorize, resolve_model, services_of
from ki2api.server.client_keys import client_key_of
from ki2api.state.client_key_rules import model_allowed, parse_models
from ki2api.state.store_status import store_view

__all__ = ["router"]

router = APIRouter()


def _model_object(info: ModelInfo) -> dict[str, Any]:
    created_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.created))
    return {
        "id": info.id,
        "object": "model",
        "created": info.created,
        "owned_by": "anthropic",
        "type": "model",
        "display_name": info.display_name,
        "created_at": created_at,
        "lifecycle": "active",
        "max_input_tokens": info.context_window,
        "max_tokens": info.max_output_tokens,
        "capabilities": None,
        "description": info.description,
        # what the accounts' ListAvailableModels says the model accepts (supportedInputTypes)
        "input_modalities": ["text", "image"] if info.images else ["text"],
    }


@router.api_route("/v1/models", methods=["GET", "HEAD"])
async def list_models(request: Request) -> Response:
    services = authorize(request)
    patterns = _patterns(request)
    models = (await services.models()).all()
    data = [_model_object(m) for m in models if model_allowed(patterns, m.id)]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


@router.api_route("/v1/models/{model_id:path}", methods=["GET", "HEAD"])
async def retrieve_model(request: Request, model_id: str) -> Response:
    services = authorize(request)
    patterns = _patterns(request)

    def not_found(name: str, hint: str) -> GatewayError:  # no hint of models the key may not use
        return model_not_found(name, "" if patterns else hint)

    info = await resolve_model(services, model_id, not_found)
    if not model_allowed(patterns, model_id, info.id):
        raise not_found(model_id, "")
    return JSONResponse(_model_object(info))


def _patterns(request: Request) -> tuple[str, ...]:
    """The model patterns of the request's store key (none: every model; API_KEY: none)."""
    record = client_key_of(request.scope)
    return parse_models(record.models) if record is not None else ()


@router.api_route("/health", methods=["GET", "HEAD"])
async def health(request: Request) -> Response:
    """Gateway and pool state, never a token: "ok" while an account can serve now, "degraded"
    when every account is resting or disabled, "no_credentials" without any. Anyone may ask
    (load balancers do, with GET or HEAD) and sees the status and counts; what describes the
    deployment (`pid`, `upstream`, the `problem` text with its file paths, and `pool`: ids,
    files, quota) only a client presenting a valid API key."""
    services = services_of(request)
    pool = services.pool
    await pool.sync()  # what other workers learnt (cooldowns, disabled accounts) counts too
    await pool.slots.observe()  # requests in flight of every worker (`serve --workers N`)
    accounts = pool.status()
    usable = sum(1 for a in accounts if a["enabled"] and not a["cooldown_s"])
    if not accounts:
        state = "no_credentials"
    else:
        state = "ok" if usable else "degraded"
    body: dict[str, Any] = {
        "status": state,
        "version": __version__,
        "accounts": {"total": len(accounts), "usable": usable},
    }
    warned = sum(1 for a in accounts if a.get("warning"))
    if warned:  # signs of trouble (docs/accounts.md): details in `pool[].warning`
        body["accounts"]["warned"] = warned
        body["warning"] = f"{warned} account(s) show signs of trouble: `ki2api accounts list`"
    if identity(request.scope, services.settings.api_keys).index is None:
        return JSONResponse(body)
    body["pid"] = os.getpid()  # which worker answered (`serve --workers N`)
    body["upstream"] = services.settings.kiro_api_base
    body["problem"] = services.credentials_problem
    body["store"] = store_view(services.store)  # a Redis store away: serving what is known
    body["pool"] = accounts
    body["queue"] = pool.slots.queue_status()  # waiting for a slot in this worker
    routes = services.routes
    if routes is not None:  # each account's network path, never a proxy's credentials
        for item in accounts:
            item["network"] = routes.path_of(str(item["id"])).shown
        body["network_warnings"] = routes.warnings()
    return JSONResponse(body)
