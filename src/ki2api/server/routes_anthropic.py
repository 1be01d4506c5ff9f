"""Anthropic Messages routes (docs/api-compat.md §B): the Anthropic dialect's adapter over the
chat pipeline (`server/chat.py`), and count_tokens.

`POST /v1/messages` (also `?beta=true`: routing ignores the query), streaming and not;
`POST /v1/messages/count_tokens`; `HEAD /api/hello` (Claude Code's connection probe). The models
and health routes are shared with the OpenAI surface (`routes_shared.py`).

What is Anthropic's here: the request model and its translation (`frontends/anthropic`), stop
sequences found on the stream, structured outputs (`output_config.format`, checked by
`frontends/json_output.py`), `thread` refused so the SDK resends the whole conversation, the
Message body and its event encoder with `ping` keep-alives, the 404 and context-overflow
wordings, and Claude Code's web-search sub-request, answered by Kiro's search without the model.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ki2api.core.errors import GatewayError
from ki2api.core.events import Event
from ki2api.core.messages import Conversation
from ki2api.core.models import ModelInfo
from ki2api.frontends.anthropic import error_json
from ki2api.frontends.anthropic.from_core import PING, MessageEncoder, fold, message_response
from ki2api.frontends.anthropic.output_format import (
    parse_output_format,
    thread_unsupported,
    wants_thread,
)
from ki2api.frontends.anthropic.stops import StopSequenceFinder
from ki2api.frontends.anthropic.to_core import to_conversation
from ki2api.frontends.anthropic.websearch import (
    failed_answer,
    new_server_tool_use_id,
    search_error_code,
    web_search_answer,
    web_search_message_events,
    web_search_request_query,
)
from ki2api.frontends.anthropic.wire import (
    MessagesRequest,
    parse_count_tokens_request,
    parse_messages_request,
)
from ki2api.frontends.json_output import JSONFormat, StreamJSONCheck, instruction
from ki2api.frontends.sse import sse_event
from ki2api.images.remote import resolve_images
from ki2api.server.chat import Prepared, authorize, read_body, resolve_model, run_chat
from ki2api.server.estimates import estimate_input_tokens, stream_limiter
from ki2api.server.services import Services
from ki2api.server.shaping import shape
from ki2api.server.streaming import StreamEncoder

__all__ = ["AnthropicChat", "router"]

router = APIRouter()


@router.post("/v1/messages")
async def create_message(request: Request) -> Response:
    services = authorize(request)
    adapter = AnthropicChat(parse_messages_request(await read_body(request)))
    return await run_chat(request, services, adapter)


class AnthropicChat:
    """One Messages request, as the pipeline's `ChatAdapter`."""

    keepalive: bytes | None = PING

    def __init__(self, req: MessagesRequest) -> None:
        if wants_thread(req.thread):  # never answer a continuation without its history
            raise thread_unsupported()
        self.req: MessagesRequest | None = req  # until the conversation is made of it
        self.tools = req.tools or []
        self.json_format = parse_output_format(req.output_config, req.output_format)
        self.model = req.model
        self.stream = bool(req.stream)
        self.message_id = "msg_" + secrets.token_hex(12)
        self.finders: list[StopSequenceFinder] = []  # one per attempt: the last one served

    def model_not_found(self, name: str, hint: str) -> GatewayError:
        return error_json.model_not_found(name, hint)

    def conversation(self, model: ModelInfo, *, remote_images: bool) -> Conversation:
        req, self.req = self.req, None  # the stream need not keep every message alive
        if req is None:
            raise RuntimeError("a request's conversation is made once")
        conv = to_conversation(req, model.kiro_id, remote_images=remote_images)
        return _with_format(conv, self.json_format)

    def overflow(self, err: GatewayError, prompt_tokens: int, context_window: int) -> GatewayError:
        """A context overflow in Claude Code's compaction wording."""
        return error_json.context_overflow(
            err, prompt_tokens=prompt_tokens, context_window=context_window
        )

    async def intercept(self, services: Services, ready: Prepared) -> Response | None:
        """Claude Code's WebSearch sub-request: served by Kiro's /mcp, not by the model."""
        query = web_search_request_query(self.tools, ready.conv)
        if query is None:
            return None
        return await _web_search(services, query, self.model, ready.input_tokens, self.stream)

    def shaped(
        self, upstream: AsyncGenerator[list[Event], None], ready: Prepared
    ) -> AsyncIterator[list[Event]]:
        """Stop sequences, max_tokens and the structured output's check on the stream (fresh
        state per attempt)."""
        finder = StopSequenceFinder(ready.conv.params.stop)
        self.finders.append(finder)
        limiter = stream_limiter(ready.conv, ready.estimate)
        check = StreamJSONCheck(self.json_format) if self.json_format else None
        # the finder sees the text only when there is a stop sequence to find (a generator
        # fewer on every batch otherwise)
        watched = finder.watch(upstream) if ready.conv.params.stop else upstream
        return shape(watched, limiter=limiter, check=check)

    def body(self, events: list[Event], ready: Prepared) -> dict[str, Any]:
        return message_response(
            events,
            message_id=self.message_id,
            model=self.model,
            input_tokens=ready.input_tokens,
            stop_sequence=self.finders[-1],
        )

    def encoder(self, ready: Prepared) -> StreamEncoder:
        tokens, window = ready.input_tokens, ready.model.context_window  # not the conversation

        def on_error(err: GatewayError) -> GatewayError:
            return self.overflow(err, tokens, window)

        return MessageEncoder(
            message_id=self.message_id,
            model=self.model,
            input_tokens=ready.input_tokens,
            stop_sequence=self.finders[-1],
            on_error=on_error,
        )


def _with_format(conv: Conversation, fmt: JSONFormat | None) -> Conversation:
    """Structured outputs: the JSON instruction after the client's system texts."""
    if fmt is None:
        return conv
    return dataclasses.replace(conv, system=(*conv.system, instruction(fmt)))


async def _web_search(
    services: Services, query: str, model: str, input_tokens: int, stream: bool
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
    """The request's input-token estimate: remote images count as images, none is fetched; a
    structured output's instruction counts as the model will get it."""
    services = authorize(request)
    req = parse_count_tokens_request(await request.body())
    model = await resolve_model(services, req.model, error_json.model_not_found)
    json_format = parse_output_format(req.output_config, req.output_format)
    conv = to_conversation(req, model.kiro_id, remote_images=True)
    conv = await resolve_images(_with_format(conv, json_format), None)
    return JSONResponse({"input_tokens": estimate_input_tokens(conv)})


@router.api_route("/api/hello", methods=["GET", "HEAD"])
async def hello() -> Response:
    return Response(status_code=200)
