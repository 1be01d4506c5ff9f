"""server/streaming.py: the response is committed only after the first batch, silence gets
keep-alives and then a timeout, a failure after the start is one in-stream error event and
never a finish or `[DONE]` (docs/api-compat.md §A.6). The real OpenAI chunk encoder; the last
test runs the whole way from KiroBackend over the scripted transport. Millisecond deadlines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.events import Event, MessageStop, TextDelta
from ki2api.core.messages import Conversation, Message, TextPart
from ki2api.core.trace import RequestTrace
from ki2api.frontends.openai.from_core import ChunkEncoder
from ki2api.frontends.sse import sse_comment
from ki2api.kiro.backend import BackendOptions, KiroBackend
from ki2api.server.streaming import FirstBatch, open_stream, sse_response
from tests.support.fake_pool import fake_pool
from tests.support.fake_transport import DROP, FakeChatTransport, Pause, Reply, answer, text_frame

KEEPALIVE = sse_comment()
HELLO: list[Event] = [TextDelta("Hel")]
END: list[Event] = [TextDelta("lo"), MessageStop("end_turn")]


def encoder() -> ChunkEncoder:
    return ChunkEncoder(
        completion_id="chatcmpl-1",
        created=1,
        model="m",
        include_usage=False,
        prompt_tokens_fallback=1,
    )


class Upstream:
    """Batches the test hands over one at a time (None ends, an exception fails)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[list[Event] | BaseException | None] = asyncio.Queue()

    async def batches(self) -> AsyncIterator[list[Event]]:
        while (item := await self.queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item


async def body(stream: FirstBatch, trace: RequestTrace | None = None, **deadlines: float) -> bytes:
    response = sse_response(stream, encoder(), trace=trace, **deadlines)  # type: ignore[arg-type]
    return b"".join([bytes(part) async for part in response.body_iterator])  # type: ignore[arg-type]


def data_events(raw: bytes) -> list[dict[str, Any]]:
    return [
        orjson.loads(line[6:])
        for line in raw.split(b"\n")
        if line.startswith(b"data: {")  # [DONE] is not JSON
    ]


async def test_the_stream_opens_only_with_the_first_batch() -> None:
    upstream = Upstream()
    opening = asyncio.ensure_future(open_stream(upstream.batches()))
    await asyncio.sleep(0.02)
    assert not opening.done()  # no response yet: the status is still free
    upstream.queue.put_nowait(HELLO)
    stream = await asyncio.wait_for(opening, 0.5)
    assert stream.first == HELLO
    upstream.queue.put_nowait(END)
    upstream.queue.put_nowait(None)
    raw = await body(stream, keepalive_s=1.0)
    assert raw.endswith(b"data: [DONE]\n\n")
    assert [e["choices"][0]["delta"].get("content") for e in data_events(raw)] == [
        "",
        "Hel",
        "lo",
        None,
    ]


async def test_a_failure_before_the_first_batch_keeps_its_own_status() -> None:
    upstream = Upstream()
    upstream.queue.put_nowait(GatewayError(ErrorKind.RATE_LIMITED, "slow down", retryable=True))
    with pytest.raises(GatewayError) as caught:
        await open_stream(upstream.batches())
    assert caught.value.kind is ErrorKind.RATE_LIMITED


async def test_an_upstream_that_ends_before_any_batch_is_a_protocol_error() -> None:
    upstream = Upstream()
    upstream.queue.put_nowait(None)
    with pytest.raises(GatewayError) as caught:
        await open_stream(upstream.batches())
    assert caught.value.kind is ErrorKind.UPSTREAM_PROTOCOL


async def test_the_backstop_deadline_on_the_first_batch() -> None:
    upstream = Upstream()
    with pytest.raises(GatewayError) as caught:
        await open_stream(upstream.batches(), first_timeout=0.01)
    assert caught.value.kind is ErrorKind.UPSTREAM_TIMEOUT


async def test_silence_is_filled_with_keep_alives() -> None:
    upstream = Upstream()
    upstream.queue.put_nowait(HELLO)
    stream = await open_stream(upstream.batches())
    asyncio.get_running_loop().call_later(0.1, upstream.queue.put_nowait, END)
    asyncio.get_running_loop().call_later(0.1, upstream.queue.put_nowait, None)
    raw = await body(stream, keepalive_s=0.01, idle_limit_s=1.0)
    assert raw.count(KEEPALIVE) >= 2
    assert raw.index(KEEPALIVE) > raw.index(b'"Hel"') and raw.endswith(b"data: [DONE]\n\n")


async def test_silence_past_the_idle_limit_ends_the_stream_with_a_timeout() -> None:
    upstream = Upstream()
    upstream.queue.put_nowait(HELLO)
    stream = await open_stream(upstream.batches())
    trace = RequestTrace(at=0.0, endpoint="/v1/chat/completions", client_key="k")
    raw = await asyncio.wait_for(body(stream, trace, keepalive_s=0.01, idle_limit_s=0.03), 1.0)
    assert raw.count(KEEPALIVE) == 2  # then the limit is reached
    last = data_events(raw)[-1]
    assert last["error"]["code"] == "upstream_timeout"
    assert b"[DONE]" not in raw and b'"finish_reason":"stop"' not in raw
    assert trace.outcome == ErrorKind.UPSTREAM_TIMEOUT.value


@pytest.mark.parametrize(
    ("failure", "kind"),
    [
        (GatewayError(ErrorKind.UPSTREAM_PROTOCOL, "cut"), ErrorKind.UPSTREAM_PROTOCOL),
        (None, ErrorKind.UPSTREAM_PROTOCOL),  # ended without a finish
        (RuntimeError("bug"), ErrorKind.INTERNAL),
    ],
    ids=["upstream-error", "no-finish", "internal"],
)
async def test_a_failure_after_the_start_is_one_error_event_and_no_done(
    failure: BaseException | None, kind: ErrorKind
) -> None:
    upstream = Upstream()
    for item in (HELLO, failure):
        upstream.queue.put_nowait(item)
    upstream.queue.put_nowait(None)
    stream = await open_stream(upstream.batches())
    trace = RequestTrace(at=0.0, endpoint="/v1/chat/completions", client_key="k")
    raw = await body(stream, trace, keepalive_s=1.0)
    events = data_events(raw)
    assert [e for e in events if "error" in e] == [events[-1]]
    assert b"[DONE]" not in raw
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1])
    assert trace.outcome == kind.value


async def test_from_the_backend_a_drop_after_the_first_content_is_an_error_event(
    tmp_path: Path,
) -> None:
    pool, _auth, http = await fake_pool(tmp_path, 2)
    try:
        chat = FakeChatTransport(
            [Reply(body=[text_frame("Hel"), Pause(0.005), DROP]), answer("never")]
        )
        backend = KiroBackend(chat, pool, BackendOptions(api_base="https://q.test"))
        conv = Conversation(
            model_id="claude-sonnet-4.5", messages=(Message("user", (TextPart("hi"),)),)
        )
        stream = await open_stream(backend.stream(conv, input_tokens=5))
        raw = await body(stream, keepalive_s=1.0)
    finally:
        await http.aclose()
    events = data_events(raw)
    assert events[1]["choices"][0]["delta"] == {"content": "Hel"}
    assert events[-1]["error"]["code"] == "upstream_protocol_error"
    assert b"[DONE]" not in raw and len(chat.posted) == 1
