"""OpenAI-compatible routes: thin handlers over the frontend translators and the backend."""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ki2api import __version__
from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.events import Event, aggregate
from ki2api.core.models import ModelInfo, not_offered_hint
from ki2api.core.trace import RequestTrace
from ki2api.frontends.openai.from_core import ChunkEncoder, completion_response
from ki2api.frontends.openai.image_parts import resolve_remote_images
from ki2api.frontends.openai.response_format import StreamJSONCheck, instruction
from ki2api.frontends.openai.to_core import to_conversation
from ki2api.frontends.openai.wire import parse_chat_request
from ki2api.frontends.remote_images import UnfetchedImages
from ki2api.images.limits import apply_image_limits
from ki2api.server.accounting import trace_of
from ki2api.server.auth import identify, require_key
from ki2api.server.disconnect import unless_gone
from ki2api.server.estimates import estimate_input_tokens, stream_limiter
from ki2api.server.services import Services
from ki2api.server.shaping import answer_batches, shape
from ki2api.server.streaming import collect, open_stream, sse_response

__all__ = ["router"]

router = APIRouter()


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _authorize(request: Request) -> Services:
    services = _services(request)
    require_key(request.headers, services.settings.api_keys)
    return services


async def _resolve_model(services: Services, name: str) -> ModelInfo:
    catalogue = await services.models()
    info = catalogue.resolve(name)
    if info is None:
        raise GatewayError(
            ErrorKind.MODEL_NOT_FOUND,
            f"The model `{name}` does not exist or you do not have access to it."
            + not_offered_hint(catalogue, name),
            param="model",
            code="model_not_found",
        )
    return info


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    services = _authorize(request)
    req = parse_chat_request(await request.body())
    model = await _resolve_model(services, req.model)
    backend = services.require_backend()
    if services.images is not None:
        unfetched = await resolve_remote_images(req, UnfetchedImages())
        if unfetched is not req:  # the text budget first: no download for a refused request
            backend.fit(apply_image_limits(to_conversation(unfetched, model)))
        req = await resolve_remote_images(req, services.images)
    conv = apply_image_limits(to_conversation(req, model))
    json_rule = instruction(req.response_format)
    if json_rule:
        conv = dataclasses.replace(conv, system=(*conv.system, json_rule))
    conv = backend.fit(conv)  # too big for Kiro: 400 now, before any work (or trimmed)
    input_tokens = estimate_input_tokens(conv)
    trace = _trace(request, req.model, req.stream, input_tokens)
    completion_id = "chatcmpl-" + secrets.token_hex(12)
    created = int(time.time())

    def shaped(upstream: AsyncGenerator[list[Event], None]) -> AsyncIterator[list[Event]]:
        """max_tokens / stop / response_format on the stream (fresh state per attempt)."""
        check = StreamJSONCheck(req.response_format) if json_rule else None
        return shape(upstream, limiter=stream_limiter(conv, input_tokens), check=check)

    batches = answer_batches(
        backend,
        conv,
        input_tokens=input_tokens,
        context_window=model.context_window,
        trace=trace,
        stream=bool(req.stream),
        shaped=shaped,
    )
    if not req.stream:
        completion = aggregate(await unless_gone(request, collect(batches)))
        body = completion_response(
            completion,
            completion_id=completion_id,
            created=created,
            model=req.model,
            prompt_tokens_fallback=input_tokens,
            include_reasoning=conv.params.thinking is not None,
        )
        return JSONResponse(body)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    encoder = ChunkEncoder(
        completion_id=completion_id,
        created=created,
        model=req.model,
        include_usage=include_usage,
        prompt_tokens_fallback=input_tokens,
        include_reasoning=conv.params.thinking is not None,
    )
    stream = await unless_gone(request, open_stream(batches))
    return sse_response(
        stream,
        encoder,
        keepalive_s=services.settings.keepalive_interval_s,
        idle_limit_s=services.settings.read_timeout_s,
        trace=trace,
    )


def _trace(
    request: Request, model: str, stream: bool | None, input_tokens: int
) -> RequestTrace | None:
    trace = trace_of(request.scope)
    if trace is not None:
        trace.model, trace.stream, trace.input_tokens = model, bool(stream), input_tokens
    return trace


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
    services = _authorize(request)
    data = [_model_object(m) for m in (await services.models()).all()]
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
    services = _authorize(request)
    return JSONResponse(_model_object(await _resolve_model(services, model_id)))


@router.api_route("/health", methods=["GET", "HEAD"])
async def health(request: Request) -> Response:
    """Gateway and pool state, never a token: "ok" while an account can serve now, "degraded"
    when every account is resting or disabled, "no_credentials" without any. Anyone may ask
    (load balancers do, with GET or HEAD) and sees the status and counts; what describes the
    deployment (`pid`, `upstream`, the `problem` text with its file paths, and `pool`: ids,
    files, quota) only a client presenting a valid API key."""
    services = _services(request)
    pool = services.pool
    await pool.sync()  # what other workers learnt (cooldowns, disabled accounts) counts too
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
    if identify(request.headers, services.settings.api_keys).index is None:
        return JSONResponse(body)
    body["pid"] = os.getpid()  # which worker answered (`serve --workers N`)
    body["upstream"] = services.settings.kiro_api_base
    body["problem"] = services.credentials_problem
    body["pool"] = accounts
    return JSONResponse(body)
