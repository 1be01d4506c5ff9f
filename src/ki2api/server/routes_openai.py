"""OpenAI Chat Completions (docs/api-compat.md §A): `POST /v1/chat/completions`, the OpenAI
dialect's adapter over the chat pipeline (`server/chat.py`).

What is OpenAI's here: the request model and its translation (`frontends/openai`), the
`response_format` instruction and its stream check, the `chat.completion` body and the chunk
encoder, the 404 wording. The models and health routes are shared (`routes_shared.py`).
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ki2api.core.errors import GatewayError
from ki2api.core.events import Event, aggregate
from ki2api.core.messages import Conversation
from ki2api.core.models import ModelInfo
from ki2api.frontends.json_output import StreamJSONCheck, instruction
from ki2api.frontends.openai import error_json
from ki2api.frontends.openai.from_core import ChunkEncoder, completion_response
from ki2api.frontends.openai.response_format import parse_format
from ki2api.frontends.openai.to_core import to_conversation
from ki2api.frontends.openai.wire import ChatCompletionRequest, parse_chat_request
from ki2api.server.chat import Prepared, authorize, read_body, run_chat
from ki2api.server.estimates import stream_limiter
from ki2api.server.services import Services
from ki2api.server.shaping import shape
from ki2api.server.streaming import StreamEncoder

__all__ = ["OpenAIChat", "router"]

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    services = authorize(request)
    adapter = OpenAIChat(parse_chat_request(await read_body(request)))
    return await run_chat(request, services, adapter)


class OpenAIChat:
    """One Chat Completions request, as the pipeline's `ChatAdapter`."""

    keepalive: bytes | None = None  # an SSE comment

    def __init__(self, req: ChatCompletionRequest) -> None:
        self.req: ChatCompletionRequest | None = req  # until the conversation is made of it
        self.stream_options = req.stream_options
        self.model = req.model
        self.stream = bool(req.stream)
        self.json_format = parse_format(req.response_format)
        self.json_rule = None if self.json_format is None else instruction(self.json_format)
        self.completion_id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())

    def model_not_found(self, name: str, hint: str) -> GatewayError:
        return error_json.model_not_found(name, hint)

    def conversation(self, model: ModelInfo, *, remote_images: bool) -> Conversation:
        req, self.req = self.req, None  # the stream need not keep every message alive
        if req is None:
            raise RuntimeError("a request's conversation is made once")
        conv = to_conversation(req, model, remote_images=remote_images)
        if self.json_rule:  # response_format: the JSON instruction after the client's system
            conv = dataclasses.replace(conv, system=(*conv.system, self.json_rule))
        return conv

    def overflow(self, err: GatewayError, prompt_tokens: int, context_window: int) -> GatewayError:
        return err  # OpenAI's own context_length_exceeded wording (kiro/request/budget.py)

    async def intercept(self, services: Services, ready: Prepared) -> Response | None:
        return None

    def shaped(
        self, upstream: AsyncGenerator[list[Event], None], ready: Prepared
    ) -> AsyncIterator[list[Event]]:
        """max_tokens / stop / response_format on the stream (fresh state per attempt)."""
        check = StreamJSONCheck(self.json_format) if self.json_format else None
        limiter = stream_limiter(ready.conv, ready.estimate)
        return shape(upstream, limiter=limiter, check=check)

    def body(self, events: list[Event], ready: Prepared) -> dict[str, Any]:
        return completion_response(
            aggregate(events),
            completion_id=self.completion_id,
            created=self.created,
            model=self.model,
            prompt_tokens_fallback=ready.input_tokens,
            include_reasoning=ready.conv.params.thinking is not None,
        )

    def encoder(self, ready: Prepared) -> StreamEncoder:
        options = self.stream_options
        return ChunkEncoder(
            completion_id=self.completion_id,
            created=self.created,
            model=self.model,
            include_usage=bool(options and options.include_usage),
            prompt_tokens_fallback=ready.input_tokens,
            include_reasoning=ready.conv.params.thinking is not None,
        )
