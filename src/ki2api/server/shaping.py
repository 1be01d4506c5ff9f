"""What the gateway does to the event stream itself, because Kiro cannot: `max_tokens` / `stop`
(`core.stream_limits.StreamLimiter`) and `response_format` (`StreamJSONCheck`).

`shape()` returns the upstream iterator untouched when neither is asked for, so the common path
pays nothing. When the limiter ends the answer, the upstream is closed at once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable

from ki2api.core.events import Event
from ki2api.core.messages import Conversation
from ki2api.core.stream_limits import StreamLimiter
from ki2api.core.trace import RequestTrace
from ki2api.frontends.json_output import StreamJSONCheck
from ki2api.kiro.backend import KiroBackend, Shaper

__all__ = ["answer_batches", "shape"]


def shape(
    batches: AsyncGenerator[list[Event], None],
    *,
    limiter: StreamLimiter | None,
    check: StreamJSONCheck | None,
) -> AsyncIterator[list[Event]]:
    if limiter is None and (check is None or not check.active):
        return batches
    return _shaped(batches, limiter, check)


def _apply(
    event: Event, limiter: StreamLimiter | None, check: StreamJSONCheck | None
) -> list[Event]:
    limited = limiter.feed(event) if limiter is not None else [event]
    if check is None:
        return limited
    out: list[Event] = []
    for ev in limited:
        out.extend(check.feed(ev))
    return out


def _apply_batch(
    batch: list[Event], limiter: StreamLimiter | None, check: StreamJSONCheck | None
) -> list[Event]:
    """The events to pass on for one batch (none past the end the limiter set)."""
    if check is None and limiter is not None:
        return limiter.feed_batch(batch)
    out: list[Event] = []
    for event in batch:
        out.extend(_apply(event, limiter, check))
        if limiter is not None and limiter.done:
            break
    return out


async def _shaped(
    batches: AsyncGenerator[list[Event], None],
    limiter: StreamLimiter | None,
    check: StreamJSONCheck | None,
) -> AsyncIterator[list[Event]]:
    try:
        async for batch in batches:
            out = _apply_batch(batch, limiter, check)
            if out:
                yield out
            if limiter is not None and limiter.done:
                return  # the answer is complete: stop reading, close the upstream below
    finally:
        await batches.aclose()


def answer_batches(
    backend: KiroBackend,
    conv: Conversation,
    *,
    input_tokens: int | Callable[[], int],
    context_window: int,
    trace: RequestTrace | None,
    stream: bool,
    shaped: Shaper,
) -> AsyncIterator[list[Event]]:
    """The answer's event batches, shaped by `shaped` (which must build fresh state on each
    call). Streaming: shaped on the way out. Not streaming: the backend reads each attempt's
    answer whole through `shaped`, so an answer cut before its end is retried on another
    account too (nothing has been sent yet)."""
    upstream = backend.stream(
        conv,
        input_tokens=input_tokens,
        context_window=context_window,
        trace=trace,
        whole=None if stream else shaped,
    )
    return shaped(upstream) if stream else upstream
