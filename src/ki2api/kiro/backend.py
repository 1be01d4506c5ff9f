"""KiroBackend: Conversation in, core events out, over the real HTTP + event-stream protocol.

The only async code of the kiro layer. Everything it calls is pure: `request.build_kiro_request`,
`codec.EventStreamDecoder`, `events.KiroStreamTranslator`, `classify`. Retries (a forced token
refresh on "bearer token invalid") happen only before any event has been yielded.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

import orjson

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.events import Event, MessageStop
from ki2api.core.messages import Conversation
from ki2api.kiro.budget import DEFAULT_MAX_UPSTREAM_BYTES, fit_conversation
from ki2api.kiro.chat_transport import ChatResponse, ChatTransport
from ki2api.kiro.classify import classify_http_error, is_bearer_invalid
from ki2api.kiro.codec import CodecError, EventStreamDecoder
from ki2api.kiro.credentials import AuthSnapshot, KiroCredentials
from ki2api.kiro.events import KiroStreamTranslator
from ki2api.kiro.headers import chat_headers, machine_id
from ki2api.kiro.request import KiroRequest, build_kiro_request

__all__ = ["BackendOptions", "KiroBackend"]

_MAX_ERROR_BODY = 64 * 1024
# Stand-ins of typical length for sizing a request before the real values are known.
_PLACEHOLDER_ID = "00000000-0000-4000-8000-000000000000"
_PLACEHOLDER_ARN = "arn:aws:codewhisperer:us-east-1:000000000000:profile/PLACEHOLDER00"


@dataclass(frozen=True, slots=True)
class BackendOptions:
    api_base: str
    profile_arn: str | None = None  # used when the login carries none (e.g. IdC)
    max_body_bytes: int = DEFAULT_MAX_UPSTREAM_BYTES  # refuse (or trim) bigger requests
    trim_history: bool = False


class KiroBackend:
    def __init__(
        self,
        chat: ChatTransport,
        credentials: KiroCredentials,
        options: BackendOptions,
        *,
        id_factory: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._chat = chat
        self._credentials = credentials
        self._options = options
        self._new_id = id_factory
        self._url = f"{options.api_base.rstrip('/')}/generateAssistantResponse"

    async def stream(
        self, conv: Conversation, *, input_tokens: int, context_window: int = 200_000
    ) -> AsyncGenerator[list[Event], None]:
        """Yield batches of events (one batch per upstream network chunk).

        Raises GatewayError before the first batch for upstream HTTP errors, and from
        the middle of the stream for exception frames, corruption or truncation.
        """
        response, request = await self._open(conv)
        try:
            translator = KiroStreamTranslator(
                input_tokens=input_tokens,
                context_window=context_window,
                tool_names=request.tool_names,
                text_call_names=request.text_call_names,
                single_tool_call=request.single_tool_call,
            )
            decoder = EventStreamDecoder()
            async for chunk in response.chunks():
                batch, failure = _translate(decoder, translator, chunk)
                if batch:
                    yield batch  # what came before a failure in the same read still goes out
                if failure is not None:
                    raise failure
            yield _finish(decoder, translator)
        finally:
            await response.aclose()

    async def _open(self, conv: Conversation) -> tuple[ChatResponse, KiroRequest]:
        auth = await self._credentials.current()
        response, request = await self._post(conv, auth)
        if response.status == 200:
            return response, request
        body = await _read_error_body(response)
        if is_bearer_invalid(response.status, body):
            auth = await self._credentials.refresh(stale=auth.access_token)
            response, request = await self._post(conv, auth)
            if response.status == 200:
                return response, request
            body = await _read_error_body(response)
        raise classify_http_error(response.status, body, response.headers)

    async def _post(
        self, conv: Conversation, auth: AuthSnapshot
    ) -> tuple[ChatResponse, KiroRequest]:
        request, payload = self._prepare(conv, auth)
        headers = chat_headers(
            auth.access_token,
            machine=machine_id(auth.account_id),
            invocation_id=self._new_id(),
        )
        return await self._chat.post(self._url, payload, headers), request

    def fit(self, conv: Conversation) -> Conversation:
        """`conv` within the upstream size budget (trimmed when configured), or
        CONTEXT_TOO_LONG; run before anything else is spent on the request."""
        arn = self._options.profile_arn or _PLACEHOLDER_ARN

        def measure(c: Conversation) -> int:
            body = build_kiro_request(c, conversation_id=_PLACEHOLDER_ID, profile_arn=arn).body
            return len(orjson.dumps(body))

        return fit_conversation(
            conv,
            max_body_bytes=self._options.max_body_bytes,
            trim=self._options.trim_history,
            measure=measure,
        )

    def _prepare(self, conv: Conversation, auth: AuthSnapshot) -> tuple[KiroRequest, bytes]:
        """The request and its bytes, within the upstream size budget (see kiro/budget.py)."""
        conversation_id = conv.conversation_id or self._new_id()
        profile_arn = auth.profile_arn or self._options.profile_arn

        def build(c: Conversation) -> tuple[KiroRequest, bytes]:
            request = build_kiro_request(
                c, conversation_id=conversation_id, profile_arn=profile_arn
            )
            return request, orjson.dumps(request.body)

        request, payload = build(conv)
        limit = self._options.max_body_bytes
        if len(payload) > limit:
            fitted = fit_conversation(
                conv,
                max_body_bytes=limit,
                trim=self._options.trim_history,
                measure=lambda c: len(build(c)[1]),
            )
            request, payload = build(fitted)
        return request, payload


async def _read_error_body(response: ChatResponse) -> bytes:
    try:
        return await response.read_limited(_MAX_ERROR_BODY)
    finally:
        await response.aclose()


def _translate(
    decoder: EventStreamDecoder, translator: KiroStreamTranslator, chunk: bytes
) -> tuple[list[Event], GatewayError | None]:
    """The events of the frames completed by `chunk`, and the failure that stopped them."""
    try:
        frames = decoder.feed(chunk)
    except CodecError as exc:
        return [], _protocol_error(f"corrupt event-stream data from Kiro ({exc})")
    out: list[Event] = []
    for frame in frames:
        try:
            out.extend(translator.feed(frame))
        except GatewayError as exc:
            return out, exc
    return out, None


def _finish(decoder: EventStreamDecoder, translator: KiroStreamTranslator) -> list[Event]:
    try:
        decoder.finish()
    except CodecError:
        raise _protocol_error("the Kiro response ended in the middle of a frame") from None
    tail = translator.finish()
    cut_short = any(isinstance(ev, MessageStop) and ev.reason != "end_turn" for ev in tail)
    if translator.content_events == 0 and not cut_short:
        raise _protocol_error("Kiro ended the response without sending any content")
    return tail


def _protocol_error(message: str) -> GatewayError:
    return GatewayError(ErrorKind.UPSTREAM_PROTOCOL, message, retryable=True)
