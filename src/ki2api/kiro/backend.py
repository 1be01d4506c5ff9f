"""KiroBackend: Conversation in, core events out, over the real HTTP + event-stream protocol.

Everything it calls is pure: `request.build_kiro_request`, `codec.EventStreamDecoder`,
`events.KiroStreamTranslator`, `classify`, `pool_policy`. Retries happen only before anything has
been yielded: a forced token refresh on "bearer token invalid" (same account), and failover to
another account of the pool (`failover.FailoverRun`) on throttling, quota, suspension, network
errors, 5xx, and streams that end empty, in the middle of a frame or stall before their first
content. The answer is held until its first content event (and what arrived with it), so every
one of those is retried. After that, a failure ends the stream with an error (the caller sends
it in the client's dialect).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.events import Event, MessageStop, TextDelta, ThinkingDelta, ToolCallStart, Usage
from ki2api.core.messages import Conversation
from ki2api.core.trace import RequestTrace
from ki2api.kiro.accounts.policy import ACCOUNT_LEVEL, conversation_key
from ki2api.kiro.accounts.pool import AccountPool, PoolAccount
from ki2api.kiro.classify import classify_http_error
from ki2api.kiro.endpoint import api_base, chat_headers, chat_region, machine_id
from ki2api.kiro.failover import FailoverRun
from ki2api.kiro.fresh_token import call_with_fresh_token
from ki2api.kiro.login.credentials import AuthSnapshot, KiroCredentials
from ki2api.kiro.request.budget import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_TOOLS,
    DEFAULT_MAX_UPSTREAM_BYTES,
    body_image_bytes,
    fit_conversation,
    text_bytes,
)
from ki2api.kiro.request.build import KiroRequest, build_kiro_request
from ki2api.kiro.request.conversation_id import kiro_conversation_id
from ki2api.kiro.stream.codec import CodecError, EventStreamDecoder
from ki2api.kiro.stream.translate import KiroStreamTranslator
from ki2api.kiro.transport import ChatResponse, ChatTransport, read_body
from ki2api.metrics import ATTEMPTS, FAILOVERS

__all__ = ["BackendOptions", "KiroBackend", "Shaper"]

# What the caller does to the event stream itself (max_tokens, stop sequences): see `whole`.
Shaper = Callable[[AsyncGenerator[list[Event], None]], AsyncIterator[list[Event]]]

_log = logging.getLogger(__name__)
_MAX_ERROR_BODY = 64 * 1024
_CONTENT = (TextDelta, ThinkingDelta, ToolCallStart)
_MAX_FITTED = 256  # fitted requests waiting for their account (see KiroBackend._fitted)
# A stand-in of typical length for sizing a request before the account's ARN is known.
_PLACEHOLDER_ARN = "arn:aws:codewhisperer:us-east-1:000000000000:profile/PLACEHOLDER00"


@dataclass(frozen=True, slots=True)
class BackendOptions:
    api_base: str  # may hold `{region}`: each account's Q region (kiro/endpoint.py)
    profile_arn: str | None = None  # used when the login carries none (e.g. IdC)
    region: str | None = None  # KIRO_REGION: one Q region for every account
    max_body_bytes: int = DEFAULT_MAX_UPSTREAM_BYTES  # refuse (or trim) bigger requests
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES  # images (base64) of one request: 400 above
    max_tools: int = DEFAULT_MAX_TOOLS  # tools of one request: 400 above
    trim_history: bool = False
    max_attempts: int = 4  # accounts tried for one request before giving up
    first_event_timeout_s: float = 120.0  # per attempt: no content by then -> next account
    pool_wait_s: float = 5.0  # how long a request may wait for a resting account to come back


class KiroBackend:
    def __init__(
        self,
        chat: ChatTransport,
        pool: AccountPool,
        options: BackendOptions,
        *,
        id_factory: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._chat = chat
        self._pool = pool
        self._options = options
        self._new_id = id_factory
        self._urls: dict[tuple[str | None, str | None], str] = {}  # per (profile ARN, region)
        # fit() -> _prepare(): the request built while measuring, not built twice (by id of the
        # conversation fit() returned, until its request takes it or ends)
        self._fitted: dict[int, tuple[Conversation, KiroRequest]] = {}

    async def stream(
        self,
        conv: Conversation,
        *,
        input_tokens: int | Callable[[], int],  # a function: see _attempt
        context_window: int = 200_000,
        trace: RequestTrace | None = None,
        whole: Shaper | None = None,
    ) -> AsyncGenerator[list[Event], None]:
        """Yield batches of events; the first one holds the first content.

        `whole`: the caller wants the complete answer at once (a non-streaming request), shaped
        by this function (its max_tokens / stop handling, which may end the answer early). The
        answer is then read to its end inside the failover loop, so a cut or incomplete answer
        is retried on another account too; it comes out as one batch.

        Raises GatewayError before the first batch when no account could answer (the last
        account's error, or the pool's "none available" error with a retry time), and from the
        middle of the stream for exception frames, corruption, truncation or a missing end.
        """
        key = conversation_key(conv) if len(self._pool) > 1 else None  # sticky needs a choice
        run = FailoverRun(self._pool, self._options.pool_wait_s, conv.model_id)
        # the retry budget: at most max_attempts attempts, and no new attempt once two
        # first-event timeouts have passed since the request came in (so an account that
        # stalled still leaves time for another)
        budget_ends = time.monotonic() + 2 * self._options.first_event_timeout_s
        sizes = (input_tokens, context_window)
        opened: _Opened | GatewayError | None = None
        try:
            for attempt in range(max(1, self._options.max_attempts)):
                if attempt and time.monotonic() > budget_ends:
                    break
                opened = await self._try_account(attempt, key, run, conv, trace, whole, sizes)
                if not isinstance(opened, GatewayError):
                    break
        finally:
            await run.settle()  # the passing faults' strikes, now that we know whose they were
        self._fitted.pop(id(conv), None)  # the request ended before an account took it
        del conv  # not kept for the length of the stream
        if opened is None or isinstance(opened, GatewayError):
            raise self._pool.unavailable(run.last)
        account, source, first, started_at = opened
        del run, opened  # nor the attempts' bookkeeping (three sets)
        self._pool.stick(key, account)
        # The rest of an answer that has started: no retry from here on. (Inline rather than a
        # helper generator: every batch would cross one more generator.)
        try:
            await self._pool.succeeded(account, started_at=started_at)
            _observe(trace, first)
            yield first
            del first
            async for batch in source:
                _observe(trace, batch)
                yield batch
        except GatewayError as err:
            if err.kind in ACCOUNT_LEVEL:  # e.g. throttled mid-answer: the account rests
                await self._pool.failed(account, err)
            raise
        finally:
            await self._drop(account, source)

    async def _try_account(
        self,
        attempt: int,
        key: str | None,
        run: FailoverRun,
        conv: Conversation,
        trace: RequestTrace | None,
        whole: Shaper | None,
        sizes: tuple[int | Callable[[], int], int],
    ) -> _Opened | GatewayError | None:
        """One attempt up to the first content: the account, its answer, what came so far and
        when it began; the error when another attempt may follow; None when no account is left
        to try."""
        account = await run.next_account(key, attempt)
        if account is None:
            return None
        if attempt and run.last is not None:  # another attempt after a failure: a failover
            FAILOVERS.labels(run.last.kind.value).inc()
        if trace is not None:
            trace.tried(account.id)
        started_at = self._pool.now()
        state = _AttemptState()
        upstream = self._attempt(conv, account, *sizes, state)
        source = whole(upstream) if whole is not None else upstream
        try:
            first = await self._first_content(source, state, whole=whole is not None)
        except GatewayError as err:
            await self._drop(account, source)
            ATTEMPTS.labels(err.kind.value).inc()
            if not await run.failed(account, err, started_at, ours=not state.upstream(err)):
                raise
            _log.info("account %s could not answer (%s); failing over", account.id, err.kind)
            return err
        except BaseException:
            await self._drop(account, source)
            raise
        ATTEMPTS.labels("ok").inc()
        return account, source, first, started_at

    async def _drop(self, account: PoolAccount, source: AsyncIterator[list[Event]]) -> None:
        self._pool.release(account)
        closer = getattr(source, "aclose", None)
        if closer is not None:  # closing a shaped source closes the upstream under it
            await closer()

    async def _first_content(
        self, source: AsyncIterator[list[Event]], state: _AttemptState, *, whole: bool
    ) -> list[Event]:
        """Everything up to and including the first content event (`whole`: the answer).

        A failure that arrived in the same network read as the first content is known before
        anything is sent: it fails this attempt (another account may take over)."""
        held: list[Event] = []
        timeout = self._options.first_event_timeout_s
        try:
            async with asyncio.timeout(timeout):
                async for batch in source:
                    held.extend(batch)
                    if any(isinstance(ev, _CONTENT) for ev in batch):
                        break
        except TimeoutError:
            raise state.mark(
                GatewayError(
                    ErrorKind.UPSTREAM_TIMEOUT,
                    f"Kiro sent no content for {timeout:g} s (KI2API_FIRST_EVENT_TIMEOUT_S).",
                    retryable=True,
                )
            ) from None
        if state.error is not None:
            raise state.error
        if whole:  # the rest, without the first-event deadline (the read timeout applies)
            async for batch in source:
                held.extend(batch)
        return held

    async def _attempt(
        self,
        conv: Conversation,
        account: PoolAccount,
        input_tokens: int | Callable[[], int],
        context_window: int,
        state: _AttemptState,
    ) -> AsyncGenerator[list[Event], None]:
        """One account's answer, as batches of events (one per upstream network read). Every
        failure of the upstream is noted in `state` before it is raised (or, when it came in
        the same read as events, before those events are handed on). `input_tokens` (what a
        usage Kiro does not report falls back on) may be a function that computes it once: it is
        called while the request to Kiro is on its way, off the time to first token."""
        if callable(input_tokens):  # on the loop's first turn the request waits for Kiro
            asyncio.get_running_loop().call_soon(input_tokens)
        try:
            response, request = await self._open(conv, account.credentials)
        except GatewayError as err:
            state.mark(err)
            raise
        # Neither the conversation nor the request body (each as large as the whole history)
        # is needed once the answer is coming: this frame lives as long as the stream.
        del conv
        try:
            translator = KiroStreamTranslator(
                input_tokens=input_tokens() if callable(input_tokens) else input_tokens,
                context_window=context_window,
                tool_names=request.tool_names,
                text_call_names=request.text_call_names,
                single_tool_call=request.single_tool_call,
            )
            del request
            decoder = EventStreamDecoder()
            ended = False
            while chunk := await response.read():  # (no reader generator under this one)
                batch, failure = _translate(decoder, translator, chunk)
                if failure is None and state.first and translator.content_events:
                    # the first content: take what already arrived behind it too, so that a
                    # failure in the same burst is known while the answer is still held
                    state.first = False
                    batch, failure, ended = await _with_arrived(
                        response, decoder, translator, batch
                    )
                if failure is not None:
                    state.mark(failure)
                if batch:
                    yield batch  # what came before a failure in the same read still goes out
                if failure is not None:
                    raise failure
                if ended:
                    return
            yield _finish(decoder, translator)
        except GatewayError as err:
            state.mark(err)
            raise
        finally:
            await response.aclose()

    async def _open(
        self, conv: Conversation, credentials: KiroCredentials
    ) -> tuple[ChatResponse, KiroRequest]:
        """The 200 answer (its body still to read); a refused token is renewed once
        (kiro/fresh_token.py); any other answer is raised as its GatewayError."""

        async def post(auth: AuthSnapshot) -> tuple[ChatResponse, KiroRequest, bytes]:
            response, request = await self._post(conv, auth)
            if response.status == 200:
                return response, request, b""
            body, _ = await read_body(response, _MAX_ERROR_BODY)  # closes the response
            return response, request, body

        response, request, body = await call_with_fresh_token(
            credentials, post, lambda posted: (posted[0].status, posted[2])
        )
        if response.status != 200:
            raise classify_http_error(response.status, body, response.headers)
        return response, request

    async def _post(
        self, conv: Conversation, auth: AuthSnapshot
    ) -> tuple[ChatResponse, KiroRequest]:
        request, payload = self._prepare(conv, auth)
        headers = chat_headers(
            auth.access_token,
            machine=auth.machine_id or machine_id(auth.account_id),
            invocation_id=self._new_id(),
        )
        self._pool.note_request(auth.account_id, conv.model_id, len(payload))  # its shape only
        proxy = self._pool.proxy_of(auth.account_id)  # the account's network path
        return await self._chat.post(self._url_for(auth), payload, headers, proxy), request

    def _url_for(self, auth: AuthSnapshot) -> str:
        """The chat URL of the account's Q region (kiro/endpoint.py)."""
        key = (auth.profile_arn, auth.region)
        url = self._urls.get(key)
        if url is None:
            region = chat_region(
                profile_arn=auth.profile_arn or self._options.profile_arn,
                login_region=auth.region,
                override=self._options.region,
            )
            url = f"{api_base(self._options.api_base, region)}/generateAssistantResponse"
            self._urls[key] = url
        return url

    def fit(self, conv: Conversation) -> Conversation:
        """`conv` within the upstream size budget (trimmed when configured), or
        CONTEXT_TOO_LONG; run before anything else is spent on the request."""
        arn = self._options.profile_arn or _PLACEHOLDER_ARN
        conversation_id = kiro_conversation_id(conv)  # the same length as any other's
        measured: list[KiroRequest] = []

        def measure(c: Conversation) -> int:
            request = build_kiro_request(c, conversation_id=conversation_id, profile_arn=arn)
            if c is conv:
                measured.append(request)
            return text_bytes(request.body)  # image bytes do not count (docs/kiro-protocol.md §3.9)

        fitted = fit_conversation(
            conv,
            max_body_bytes=self._options.max_body_bytes,
            trim=self._options.trim_history,
            measure=measure,
            max_tools=self._options.max_tools,
            max_image_bytes=self._options.max_image_bytes,
        )
        if fitted is conv and measured:  # kept whole: _prepare sends what was measured
            if len(self._fitted) >= _MAX_FITTED:
                del self._fitted[next(iter(self._fitted))]  # the oldest, never sent
            self._fitted[id(conv)] = (conv, measured[0])
        return fitted

    def _prepare(self, conv: Conversation, auth: AuthSnapshot) -> tuple[KiroRequest, bytes]:
        """The request and its bytes, within the upstream size budget (request/budget.py)."""
        profile_arn = auth.profile_arn or self._options.profile_arn
        built = self._fitted.pop(id(conv), None)
        if built is not None and built[0] is conv:  # built by fit(): only the ARN differs
            request = _with_arn(built[1], profile_arn)
            payload = orjson.dumps(request.body)
            limit = self._options.max_body_bytes
            if len(payload) - body_image_bytes(request.body) <= limit:
                return request, payload
        conversation_id = kiro_conversation_id(conv)  # one per conversation, as real clients

        def build(c: Conversation) -> tuple[KiroRequest, bytes]:
            request = build_kiro_request(
                c, conversation_id=conversation_id, profile_arn=profile_arn
            )
            return request, orjson.dumps(request.body)

        request, payload = build(conv)
        limit = self._options.max_body_bytes
        if len(payload) - body_image_bytes(request.body) > limit:
            fitted = fit_conversation(
                conv,
                max_body_bytes=limit,
                trim=self._options.trim_history,
                measure=lambda c: text_bytes(build(c)[0].body),
                max_tools=self._options.max_tools,
                max_image_bytes=self._options.max_image_bytes,
            )
            request, payload = build(fitted)
        return request, payload


def _with_arn(request: KiroRequest, profile_arn: str | None) -> KiroRequest:
    """`request` for the account's profile ARN: the body `build_kiro_request` would give."""
    old = request.body
    body: dict[str, Any] = {"conversationState": old["conversationState"]}
    if profile_arn:
        body["profileArn"] = profile_arn
    if "additionalModelRequestFields" in old:
        body["additionalModelRequestFields"] = old["additionalModelRequestFields"]
    return dataclasses.replace(request, body=body)


def _translate(
    decoder: EventStreamDecoder, translator: KiroStreamTranslator, chunk: bytes
) -> tuple[list[Event], GatewayError | None]:
    """The events of the frames completed by `chunk`, and the failure that stopped them."""
    try:
        frames = decoder.feed_raw(chunk)
    except CodecError as exc:
        return [], _protocol_error(f"corrupt event-stream data from Kiro ({exc})")
    out: list[Event] = []
    try:
        translator.feed_raw(frames, out)  # out: the events of the frames before a failure
    except GatewayError as exc:
        return out, exc
    return out, None


async def _with_arrived(
    response: ChatResponse,
    decoder: EventStreamDecoder,
    translator: KiroStreamTranslator,
    batch: list[Event],
) -> tuple[list[Event], GatewayError | None, bool]:
    """`batch` plus the events of the bytes that already arrived behind it; the failure among
    them; whether the answer is complete (its closing checks done)."""
    for _ in range(2):  # the event loop's turns to read what is already on the socket
        await asyncio.sleep(0)
    data, eof = await response.arrived()
    more, failure = _translate(decoder, translator, data) if data else ([], None)
    batch = batch + more if more else batch
    if failure is not None or not eof:
        return batch, failure, False
    try:
        return batch + _finish(decoder, translator), None, True
    except GatewayError as err:
        return batch, err, True


def _finish(decoder: EventStreamDecoder, translator: KiroStreamTranslator) -> list[Event]:
    try:
        decoder.finish()
    except CodecError:
        raise _protocol_error("the Kiro response ended in the middle of a frame") from None
    tail = translator.finish()
    cut_short = any(isinstance(ev, MessageStop) and ev.reason != "end_turn" for ev in tail)
    if translator.content_events == 0 and not cut_short:
        raise _protocol_error("Kiro ended the response without sending any content")
    # A body that ended cleanly is a complete answer, with or without the closing metering /
    # context-usage events: real 2025 answers had none (docs/kiro-protocol.md). Truncation shows
    # as a broken connection (an error from the transport) or a partial frame (above).
    return tail


class _AttemptState:
    """What one attempt's upstream reported: its failure, known as soon as it was read."""

    __slots__ = ("error", "first")

    def __init__(self) -> None:
        self.error: GatewayError | None = None
        self.first = True  # no content has come yet

    def mark(self, err: GatewayError) -> GatewayError:
        if self.error is None:
            self.error = err
        return err

    def upstream(self, err: GatewayError) -> bool:
        """Did `err` come from Kiro (rather than from a check of the gateway's own)?"""
        return err is self.error


_Opened = tuple[PoolAccount, AsyncIterator[list[Event]], list[Event], float]


def _observe(trace: RequestTrace | None, batch: list[Event]) -> None:
    if trace is not None:
        for ev in batch:
            if isinstance(ev, Usage):
                trace.usage(ev)


def _protocol_error(message: str) -> GatewayError:
    return GatewayError(ErrorKind.UPSTREAM_PROTOCOL, message, retryable=True)
