"""Anthropic Messages routes (docs/api-compat.md §B): thin handlers over the frontend and the
backend.

`POST /v1/messages` (also `?beta=true`: routing ignores the query), streaming and not;
`POST /v1/messages/count_tokens`; `HEAD /api/hello` (Claude Code's connection probe). The models
routes are shared with the OpenAI surface (routes_openai.py serves a shape both SDKs accept).
"""

from __future__ import annotations

import dataclasses
import functools
import secrets
from collections.abc import AsyncGenerator, AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.events import Event
from ki2api.core.messages import Conversation
from ki2api.core.models import ModelInfo, not_offered_hint
from ki2api.core.websearch import (
    failed_answer,
    new_server_tool_use_id,
    search_error_code,
    web_search_answer,
)
from ki2api.frontends.anthropic.error_json import context_overflow
from ki2api.frontends.anthropic.from_core import PING, MessageEncoder, fold, message_response
from ki2api.frontends.anthropic.image_parts import UnfetchedImages, resolve_remote_images
from ki2api.frontends.anthropic.stops import StopSequenceFinder
from ki2api.frontends.anthropic.to_core import to_conversation
from ki2api.frontends.anthropic.websearch import web_search_message_events
from ki2api.frontends.anthropic.wire import parse_count_tokens_request, parse_messages_request
from ki2api.frontends.sse import sse_event
from ki2api.images.limits import apply_image_limits
from ki2api.kiro.mcp import web_search_request_query
from ki2api.server.accounting import trace_of
from ki2api.server.auth import require_key
from ki2api.server.disconnect import unless_gone
from ki2api.server.estimates import estimate_input_tokens, stream_limiter
from ki2api.server.services import Services
from ki2api.server.shaping import answer_batches, shape
from ki2api.server.streaming import collect, open_stream, sse_response

__all__ = ["router"]

router = APIRouter()


def _authorize(request: Request) -> Services:
    services: Services = request.app.state.services
    require_key(request.headers, services.settings.api_keys)
    return services


async def _resolve_model(services: Services, name: str) -> ModelInfo:
    catalogue = await services.models()
    info = catalogue.resolve(name)
    if info is None:
        hint = not_offered_hint(catalogue, name)
        raise GatewayError(ErrorKind.MODEL_NOT_FOUND, f"model: {name}{hint}", param="model")
    return info


async def _fit(services: Services, conv: Conversation, model: ModelInfo) -> Conversation:
    """`conv` within Kiro's size budget, or 400 in Claude Code's compaction wording."""
    conv = dataclasses.replace(conv, native=model.native)  # the model's native request fields
    try:
        return services.require_backend().fit(conv)
    except GatewayError as err:
        if err.kind is not ErrorKind.CONTEXT_TOO_LONG:
            raise
        tokens = estimate_input_tokens(conv, refused=True)  # never tokenize what is refused
        raise context_overflow(
            err, prompt_tokens=tokens, context_window=model.context_window
        ) from None


@router.post("/v1/messages")
async def create_message(request: Request) -> Response:
    services = _authorize(request)
    req = parse_messages_request(await request.body())
    model = await _resolve_model(services, req.model)
    if services.images is not None:
        unfetched = await resolve_remote_images(req, UnfetchedImages())
        if unfetched is not req:  # the text budget first: no download for a refused request
            await _fit(
                services, apply_image_limits(to_conversation(unfetched, model.kiro_id)), model
            )
        req = await resolve_remote_images(req, services.images)
    conv = await _fit(services, apply_image_limits(to_conversation(req, model.kiro_id)), model)
    backend = services.require_backend()
    input_tokens = estimate_input_tokens(conv)
    trace = trace_of(request.scope)
    if trace is not None:
        trace.model, trace.stream, trace.input_tokens = req.model, bool(req.stream), input_tokens
    query = web_search_request_query(req.tools or [], conv)
    if query is not None:  # Claude Code's WebSearch sub-request: served by Kiro's /mcp
        return await _web_search(services, query, req.model, input_tokens, stream=bool(req.stream))
    overflow = functools.partial(
        context_overflow, prompt_tokens=input_tokens, context_window=model.context_window
    )
    message_id = "msg_" + secrets.token_hex(12)
    finders: list[StopSequenceFinder] = []  # one per attempt: the last one served

    def shaped(upstream: AsyncGenerator[list[Event], None]) -> AsyncIterator[list[Event]]:
        finder = StopSequenceFinder(conv.params.stop)
        finders.append(finder)
        limiter = stream_limiter(conv, input_tokens)
        return shape(finder.watch(upstream), limiter=limiter, check=None)

    batches = answer_batches(
        backend,
        conv,
        input_tokens=input_tokens,
        context_window=model.context_window,
        trace=trace,
        stream=bool(req.stream),
        shaped=shaped,
    )
    try:
        if not req.stream:
            events = await unless_gone(request, collect(batches))
            body = message_response(
                events,
                message_id=message_id,
                model=req.model,
                input_tokens=input_tokens,
                stop_sequence=finders[-1],
            )
            return JSONResponse(body)
        stream = await unless_gone(request, open_stream(batches))
    except GatewayError as err:
        raise overflow(err) from None
    encoder = MessageEncoder(
        message_id=message_id,
        model=req.model,
        input_tokens=input_tokens,
        stop_sequence=finders[-1],
        on_error=overflow,
    )
    return sse_response(
        stream,
        encoder,
        keepalive_s=services.settings.keepalive_interval_s,
        idle_limit_s=services.settings.read_timeout_s,
        keepalive=PING,
        trace=trace,
    )


async def _web_search(
    services: Services, query: str, model: str, input_tokens: int, *, stream: bool
) -> Response:
    tool_use_id = new_server_tool_use_id()
    try:
        results = await services.require_web_search().search(query)
        answer = web_search_answer(query, results, tool_use_id=tool_use_id)
    except GatewayError as err:
        code = search_error_code(err)
        if code is None:
            raise
        answer = failed_answer(query, code, tool_use_id=tool_use_id)
    events = web_search_message_events(
        answer, message_id="msg_" + secrets.token_hex(12), model=model, input_tokens=input_tokens
    )
    if not stream:
        return JSONResponse(fold(events))
    return StreamingResponse(
        iter([sse_event(name, data) for name, data in events]),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


@router.post("/v1/messages/count_tokens")
async def count_tokens(request: Request) -> Response:
    services = _authorize(request)
    req = parse_count_tokens_request(await request.body())
    model = await _resolve_model(services, req.model)
    counted = await resolve_remote_images(req, UnfetchedImages())
    conv = apply_image_limits(to_conversation(counted, model.kiro_id))
    return JSONResponse({"input_tokens": estimate_input_tokens(conv)})


@router.api_route("/api/hello", methods=["GET", "HEAD"])
async def hello() -> Response:
    return Response(status_code=200)
