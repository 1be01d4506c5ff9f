"""OpenAI Responses API (docs/api-compat.md §R): `POST /v1/responses`, streaming and not, as an
adapter over the chat pipeline (`server/chat.py`); `GET` and `DELETE /v1/responses/{id}`.

Stored responses: unless the request says `store: false` (or `KI2API_RESPONSES_TTL_S` is 0), a
finished response is kept in the state store for `KI2API_RESPONSES_TTL_S` seconds, with the whole
conversation that led to it (its input items after the previous ones), so `previous_response_id`
works from any worker. It is written before the client sees the end of the answer (before the
body of a non-streaming answer, before the bytes of `response.completed`). A failed response
is not kept. An unknown, expired or deleted `previous_response_id` is a 400
`previous_response_not_found` (OpenAI's answer); GET and DELETE of one are a 404.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.events import Event
from ki2api.core.messages import Conversation
from ki2api.core.models import ModelInfo
from ki2api.frontends.json_output import StreamJSONCheck, instruction
from ki2api.frontends.openai import error_json
from ki2api.frontends.openai.responses_from_core import ResponseBuilder, ResponsesEncoder
from ki2api.frontends.openai.responses_search import SearchCalls
from ki2api.frontends.openai.responses_to_core import (
    offers_search,
    search_name,
    text_format,
    to_conversation,
)
from ki2api.frontends.openai.responses_wire import (
    InputItem,
    ResponsesRequest,
    dump_items,
    parse_items,
    parse_responses_request,
)
from ki2api.server.chat import AnswerSource, Prepared, Shaper, authorize, run_chat
from ki2api.server.estimates import stream_limiter
from ki2api.server.search_loop import SearchLoop
from ki2api.server.services import Services
from ki2api.server.shaping import shape
from ki2api.server.streaming import StreamEncoder
from ki2api.state.base import StateStore

__all__ = ["ResponsesChat", "router"]

router = APIRouter()


@router.post("/v1/responses")
async def create_response(request: Request) -> Response:
    services = authorize(request)
    req = parse_responses_request(await request.body())
    prior_raw, prior_texts = await _prior(services, req.previous_response_id)
    adapter = ResponsesChat(req, prior_raw, prior_texts)
    response = await run_chat(request, services, adapter, answer=adapter.search_loop(services))
    ttl = services.settings.responses_ttl_s
    if req.store is False or ttl <= 0:
        return response
    if isinstance(response, StreamingResponse):
        response.body_iterator = _storing(response.body_iterator, adapter, services.store, ttl)
    elif adapter.final is not None:
        await adapter.save(services.store, ttl)
    return response


@router.get("/v1/responses/{response_id}")
async def get_response(request: Request, response_id: str) -> Response:
    services = authorize(request)
    record = await _record(services, response_id)
    if record is None:
        raise _not_found(response_id)
    return JSONResponse(record["response"])


@router.delete("/v1/responses/{response_id}")
async def delete_response(request: Request, response_id: str) -> Response:
    services = authorize(request)
    if not await services.store.delete_response(response_id):
        raise _not_found(response_id)
    return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})


def _not_found(response_id: str) -> GatewayError:
    return GatewayError(ErrorKind.NOT_FOUND, f"No response found with id '{response_id}'.")


async def _record(services: Services, response_id: str) -> dict[str, Any] | None:
    raw = await services.store.get_response(response_id, time.time())
    if raw is None:
        return None
    record: dict[str, Any] = orjson.loads(raw)
    return record


async def _prior(services: Services, response_id: str | None) -> tuple[list[Any], dict[str, str]]:
    """The stored conversation a continuation follows: its items, then its output; and the
    results text of its web searches, by item id."""
    if response_id is None:
        return [], {}
    record = await _record(services, response_id)
    if record is None:
        raise GatewayError(
            ErrorKind.INVALID_REQUEST,
            f"Previous response with id '{response_id}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    texts = record.get("search_texts") or {}
    return [*record["items"], *record["response"]["output"]], texts


async def _storing(
    chunks: AsyncIterable[Any], adapter: ResponsesChat, store: StateStore, ttl: float
) -> AsyncIterator[Any]:
    """The stream's bytes; the response is stored before the chunk that completes it."""
    saved = False
    async with contextlib.aclosing(_aiter(chunks)) as body:
        async for chunk in body:
            if not saved and adapter.final is not None:
                saved = True
                await adapter.save(store, ttl)
            yield chunk


async def _aiter(chunks: AsyncIterable[Any]) -> AsyncGenerator[Any, None]:
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


class ResponsesChat:
    """One Responses API request, as the pipeline's `ChatAdapter`."""

    keepalive: bytes | None = None  # an SSE comment

    def __init__(
        self, req: ResponsesRequest, prior_raw: list[Any], prior_texts: dict[str, str]
    ) -> None:
        self.req = req
        self.prior_texts = prior_texts
        include = "web_search_call.action.sources" in (req.include or [])
        self.searches = SearchCalls(search_name(req), include) if offers_search(req) else None
        self.model = req.model
        self.stream = bool(req.stream)
        self.prior_raw = prior_raw
        self.prior: list[InputItem] = parse_items(prior_raw)
        self.format = text_format(req)  # a bad text.format is a 400 before anything else
        self.json_rule = instruction(self.format) if self.format is not None else None
        self.response_id = "resp_" + secrets.token_hex(24)
        self.created_at = int(time.time())
        self.builders: list[ResponseBuilder] = []

    @property
    def final(self) -> dict[str, Any] | None:
        """The finished response object (None until the answer has ended well)."""
        return self.builders[-1].final if self.builders else None

    async def save(self, store: StateStore, ttl: float) -> None:
        final = self.final
        assert final is not None
        texts = dict(self.prior_texts)
        if self.searches is not None:
            texts.update((item_id, c.text) for item_id, c in self.searches.calls.items())
        record = {
            "items": [*self.prior_raw, *dump_items(self.req)],
            "response": final,
            "search_texts": texts,
        }
        await store.put_response(self.response_id, orjson.dumps(record), time.time() + ttl)

    def model_not_found(self, name: str, hint: str) -> GatewayError:
        return error_json.model_not_found(name, hint)

    def search_loop(self, services: Services) -> AnswerSource | None:
        """With a web_search tool, the answer is the search loop's (server/search_loop.py)."""
        searches = self.searches
        if searches is None:
            return None

        def answer(ready: Prepared, shaped: Shaper) -> AsyncIterator[list[Event]]:
            loop = SearchLoop(
                services,
                ready.conv,
                searches,
                stream=self.stream,
                context_window=ready.model.context_window,
                trace=ready.trace,
            )
            return loop.batches(shaped)

        return answer

    def conversation(self, model: ModelInfo, *, remote_images: bool) -> Conversation:
        conv = to_conversation(
            self.req,
            model,
            prior=self.prior,
            remote_images=remote_images,
            search_texts=self.prior_texts,
        )
        if self.json_rule:  # text.format: the JSON instruction after the client's system
            conv = dataclasses.replace(conv, system=(*conv.system, self.json_rule))
        return conv

    def overflow(self, err: GatewayError, prompt_tokens: int, context_window: int) -> GatewayError:
        return err

    async def intercept(self, services: Services, ready: Prepared) -> Response | None:
        return None

    def shaped(
        self, upstream: AsyncGenerator[list[Event], None], ready: Prepared
    ) -> AsyncIterator[list[Event]]:
        """max_output_tokens / text.format on the stream (fresh state per attempt)."""
        check = StreamJSONCheck(self.format) if self.format is not None else None
        return shape(upstream, limiter=stream_limiter(ready.conv, ready.estimate), check=check)

    def _builder(self, ready: Prepared) -> ResponseBuilder:
        builder = ResponseBuilder(
            self.envelope(), input_tokens=ready.input_tokens, searches=self.searches
        )
        self.builders.append(builder)
        return builder

    def body(self, events: list[Event], ready: Prepared) -> dict[str, Any]:
        builder = self._builder(ready)
        for event in events:
            builder.feed(event)
        if builder.final is None:
            raise GatewayError(
                ErrorKind.UPSTREAM_PROTOCOL, "the Kiro response ended without a finish"
            )
        return builder.final

    def encoder(self, ready: Prepared) -> StreamEncoder:
        return ResponsesEncoder(self._builder(ready))

    def envelope(self) -> dict[str, Any]:
        """The response object's fixed fields: ids, and the request's settings echoed."""
        req = self.req
        choice = req.tool_choice
        reasoning = req.reasoning
        fmt = req.text.format if req.text and req.text.format else None
        extra = {"user": req.user} if req.user is not None else {}  # a string, never null
        return {
            **extra,
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "model": req.model,
            "instructions": req.instructions,
            "metadata": req.metadata or {},
            "tools": req.tools or [],
            "tool_choice": choice if isinstance(choice, str) else (_dump(choice) or "auto"),
            "parallel_tool_calls": req.parallel_tool_calls is not False,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "max_output_tokens": req.max_output_tokens,
            "previous_response_id": req.previous_response_id,
            "reasoning": _dump(reasoning),
            "text": {"format": _dump(fmt) or {"type": "text"}},
            "store": req.store is not False,
            "truncation": "disabled",
            "background": False,
            "error": None,
            "incomplete_details": None,
        }


def _dump(model: BaseModel | None) -> dict[str, Any] | None:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True) if model else None
