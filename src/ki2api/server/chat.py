"""The chat pipeline: one request's way through the gateway, the same for every client dialect.

A route parses the body into its dialect's `ChatAdapter` and calls `run_chat`, which does the
rest in this order:

1. the API key (`auth.require_key`, or a store key: `client_keys`), then the model
   (`resolve_model`, the dialect's 404), then the store key's limits (`client_keys.admit`);
2. the core `Conversation` (the adapter translates it), then Kiro's accounts are required;
3. images: limits applied and remote images fetched, once, on the conversation
   (`images.remote.resolve_images`; the text budget is checked before any download);
4. the size budget (`KiroBackend.fit`: too big is a 400 now, before any work, or trimmed);
5. the request's trace (model, stream) and its input-token estimate (`InputEstimate`: made
   once, while the request to Kiro is on its way, or earlier by whatever needs it first);
6. the adapter's `intercept` (a request answered without the model, e.g. Claude Code's web
   search), else the answer: Kiro's events shaped (max_tokens, stop, the dialect's own checks),
   collected into the dialect's JSON body, or streamed through its SSE encoder.

What differs between dialects is the adapter's: its wording of errors (a missing model, a
context overflow), its shaping, its body and its encoder, its keep-alive.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.events import Event
from ki2api.core.messages import Conversation
from ki2api.core.models import ModelInfo, not_offered_hint
from ki2api.core.trace import RequestTrace
from ki2api.frontends.sse import sse_comment
from ki2api.images.remote import resolve_images
from ki2api.kiro.backend import KiroBackend
from ki2api.server.accounting import trace_of
from ki2api.server.auth import identity, require_key
from ki2api.server.client_keys import (
    admit,
    client_key_of,
    refuse_if_store_away,
    refuse_unusable,
)
from ki2api.server.disconnect import unless_gone
from ki2api.server.estimates import InputEstimate, estimate_input_tokens
from ki2api.server.inline_stream import InlineSSEResponse, can_write_now, first_batch
from ki2api.server.services import Services
from ki2api.server.shaping import answer_batches
from ki2api.server.streaming import StreamEncoder, collect, open_stream, sse_response

JSON = "application/json"

__all__ = [
    "AnswerSource",
    "ChatAdapter",
    "ModelNotFound",
    "Prepared",
    "Shaper",
    "authorize",
    "read_body",
    "resolve_model",
    "run_chat",
    "services_of",
]


# the dialect's 404 for an unknown model: (name, the catalogue's hint) -> the error
ModelNotFound = Callable[[str, str], GatewayError]
# the answer's shaping of one upstream answer (fresh state on each call)
Shaper = Callable[[AsyncGenerator[list[Event], None]], AsyncIterator[list[Event]]]


@dataclass(frozen=True, slots=True)
class Prepared:
    """What the pipeline settled before asking Kiro, handed to the adapter's hooks."""

    conv: Conversation
    model: ModelInfo
    estimate: InputEstimate  # the input tokens, computed once (lazy: see `InputEstimate`)
    trace: RequestTrace | None

    @property
    def input_tokens(self) -> int:
        return self.estimate()


# an answer made of several upstream answers: (the prepared request, the shaping) -> its batches
AnswerSource = Callable[[Prepared, Shaper], AsyncIterator[list[Event]]]


class ChatAdapter(Protocol):
    """One request in one dialect: the parsed body and the dialect's ways with it. A route makes
    one per request, so per-request state (ids, stop-sequence finders) lives on it."""

    model: str  # the model as the client named it (answers echo it)
    stream: bool
    keepalive: bytes | None  # what a silent stream sends (None: an SSE comment)

    def model_not_found(self, name: str, hint: str) -> GatewayError:
        """The dialect's 404 for an unknown model (`hint`: what the catalogue suggests)."""
        ...

    def conversation(self, model: ModelInfo, *, remote_images: bool) -> Conversation:
        """The request in core terms; `remote_images`: image URLs are taken (fetched later)."""
        ...

    def overflow(self, err: GatewayError, prompt_tokens: int, context_window: int) -> GatewayError:
        """`err` in the dialect's wording of a context overflow (other errors unchanged)."""
        ...

    async def intercept(self, services: Services, ready: Prepared) -> Response | None:
        """A response made without the model, or None to ask the model."""
        ...

    def shaped(
        self, upstream: AsyncGenerator[list[Event], None], ready: Prepared
    ) -> AsyncIterator[list[Event]]:
        """The answer's batches shaped for this dialect (fresh state on each call: one per
        attempt)."""
        ...

    def body(self, events: list[Event], ready: Prepared) -> dict[str, Any]:
        """The non-streaming response body of a whole answer."""
        ...

    def encoder(self, ready: Prepared) -> StreamEncoder:
        """The SSE encoder of a streamed answer."""
        ...


async def read_body(request: Request) -> bytes:
    """The request's body, read once and not kept: Starlette's `Request.body()` caches it on
    the request, which lives as long as a streamed answer (a long history, for minutes)."""
    chunks: list[bytes] = []
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def authorize(request: Request) -> Services:
    """The app's services, once the request's API key is accepted (else a 401): API_KEY, or a
    usable store key (found by `client_keys.ClientKeyFinder`)."""
    services = services_of(request)
    record = client_key_of(request.scope)
    if record is None:
        refuse_if_store_away(request.scope)
        require_key(identity(request.scope, services.settings.api_keys))
    else:
        refuse_unusable(record, time.time())
    return services


async def resolve_model(services: Services, name: str, not_found: ModelNotFound) -> ModelInfo:
    catalogue = await services.models()
    info = catalogue.resolve(name)
    if info is None:
        raise not_found(name, not_offered_hint(catalogue, name))
    return info


async def run_chat(
    request: Request,
    services: Services,
    adapter: ChatAdapter,
    *,
    answer: AnswerSource | None = None,
) -> Response:
    """The response to one chat request (`services`: from `authorize`, before the body is
    parsed into `adapter`; `answer`: where the answer's batches come from when it is more than
    one upstream answer, e.g. the Responses API's web-search loop)."""
    model = await resolve_model(services, adapter.model, adapter.model_not_found)
    await admit(request.scope, services.store, adapter.model, model.id)
    conv = await _conversation(services, adapter, model)
    trace = _trace(request, adapter)
    ready = Prepared(conv, model, InputEstimate(conv, trace), trace)
    try:
        early = await adapter.intercept(services, ready)
        if early is not None:
            return early
        return await _answer(request, services, adapter, ready, answer)
    finally:
        ready.estimate()  # made by now unless Kiro was never asked: the usage row has it too


async def _conversation(services: Services, adapter: ChatAdapter, model: ModelInfo) -> Conversation:
    """The conversation Kiro gets: translated, its images resolved, within the size budget."""
    conv = adapter.conversation(model, remote_images=services.images is not None)
    conv = dataclasses.replace(conv, native=model.native)  # the model's native request fields
    if len(services.pool) == 0:  # a login added since the start (`ki2api login --store`)
        await services.pool.sync()
    backend = services.require_backend()

    def fit(conv: Conversation) -> Conversation:
        return _fit(backend, adapter, conv, model)

    return fit(await resolve_images(conv, services.images, before_fetch=fit))


def _fit(
    backend: KiroBackend, adapter: ChatAdapter, conv: Conversation, model: ModelInfo
) -> Conversation:
    try:
        return backend.fit(conv)
    except GatewayError as err:
        if err.kind is not ErrorKind.CONTEXT_TOO_LONG:
            raise
        tokens = estimate_input_tokens(conv, refused=True)  # never tokenize what is refused
        raise adapter.overflow(err, tokens, model.context_window) from None


def _trace(request: Request, adapter: ChatAdapter) -> RequestTrace | None:
    trace = trace_of(request.scope)
    if trace is not None:
        trace.model, trace.stream = adapter.model, adapter.stream
    return trace


def _without_messages(ready: Prepared) -> Prepared:
    conv = dataclasses.replace(ready.conv, messages=(), system=(), tools=())
    return dataclasses.replace(ready, conv=conv)


async def _answer(
    request: Request,
    services: Services,
    adapter: ChatAdapter,
    ready: Prepared,
    answer: AnswerSource | None,
) -> Response:
    # The shaping lives as long as the stream: it keeps the conversation's settings, not its
    # messages (an answer of several upstream answers, `answer`, needs them all along).
    kept = ready if answer is not None else _without_messages(ready)

    def shaped(upstream: AsyncGenerator[list[Event], None]) -> AsyncIterator[list[Event]]:
        return adapter.shaped(upstream, kept)

    batches = (
        answer(ready, shaped)
        if answer is not None
        else answer_batches(
            services.require_backend(),
            ready.conv,
            input_tokens=ready.estimate,
            context_window=ready.model.context_window,
            trace=ready.trace,
            stream=adapter.stream,
            shaped=shaped,
        )
    )
    inline = adapter.stream and can_write_now(request.scope)
    try:
        if not adapter.stream:
            events = await unless_gone(request, collect(batches))
            # orjson: a whole answer's JSON in about a tenth of the stdlib's time
            return Response(orjson.dumps(adapter.body(events, ready)), media_type=JSON)
        if inline:  # read and written on this task (server/inline_stream.py)
            first = await unless_gone(request, first_batch(batches))
        else:
            stream = await unless_gone(request, open_stream(batches))
    except GatewayError as err:
        raise adapter.overflow(err, ready.input_tokens, ready.model.context_window) from None
    if inline:
        return InlineSSEResponse(
            batches,
            first,
            adapter.encoder(ready),
            keepalive=adapter.keepalive or sse_comment(),
            keepalive_s=services.settings.keepalive_interval_s,
            idle_limit_s=services.settings.read_timeout_s,
            trace=ready.trace,
        )
    return sse_response(
        stream,
        adapter.encoder(ready),
        keepalive_s=services.settings.keepalive_interval_s,
        idle_limit_s=services.settings.read_timeout_s,
        keepalive=adapter.keepalive,
        trace=ready.trace,
    )
