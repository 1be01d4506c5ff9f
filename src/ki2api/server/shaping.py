"""What the gateway does to the event stream itself, because Kiro cannot: `max_tokens` / `stop`
(`core.stream_limits.StreamLimiter`) and `response_format` (`StreamJSONCheck`).

`shape()` returns the upstream iterator untouched when neither is asked for, so the common path
pays nothing. When the limiter ends the answer, the upstream is closed at once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from ki2api.core.events import Event
from ki2api.core.stream_limits import StreamLimiter
from ki2api.frontends.openai.response_format import StreamJSONCheck

__all__ = ["shape"]


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


async def _shaped(
    batches: AsyncGenerator[list[Event], None],
    limiter: StreamLimiter | None,
    check: StreamJSONCheck | None,
) -> AsyncIterator[list[Event]]:
    try:
        async for batch in batches:
            out: list[Event] = []
            for event in batch:
                out.extend(_apply(event, limiter, check))
                if limiter is not None and limiter.done:
                    break
            if out:
                yield out
            if limiter is not None and limiter.done:
                return  # the answer is complete: stop reading, close the upstream below
    finally:
        await batches.aclose()
