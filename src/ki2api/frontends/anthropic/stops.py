"""Which stop sequence ended a response (Anthropic reports it as `stop_sequence`). Pure.

`core.stream_limits.StreamLimiter` ends the answer at the stop string completed first but does
not say which one; `StopSequenceFinder` sees the same upstream text (fed before the limiter)
and finds it with the same `StopMatcher` rule, so the two always agree.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

from ki2api.core.events import Event, TextDelta
from ki2api.core.stream_limits import StopMatcher

__all__ = ["StopSequenceFinder"]


class StopSequenceFinder:
    def __init__(self, stops: Sequence[str]) -> None:
        self._matcher = StopMatcher(stops)
        self.matched: str | None = None

    def feed_text(self, text: str) -> None:
        if self.matched is not None or not self._matcher.stops:
            return
        seen = self._matcher.held + text
        released, stopped = self._matcher.feed(text)
        if stopped:
            at = len(released)
            self.matched = min((s for s in self._matcher.stops if seen.startswith(s, at)), key=len)

    def feed(self, events: Sequence[Event]) -> None:
        for ev in events:
            if isinstance(ev, TextDelta):
                self.feed_text(ev.text)

    async def watch(
        self, batches: AsyncGenerator[list[Event], None]
    ) -> AsyncGenerator[list[Event], None]:
        """`batches` unchanged, with their text seen on the way (closed with this one)."""
        try:
            async for batch in batches:
                self.feed(batch)
                yield batch
        finally:
            await batches.aclose()

    def __call__(self) -> str | None:
        return self.matched
