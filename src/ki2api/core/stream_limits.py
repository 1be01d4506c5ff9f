"""`max_tokens` and `stop` enforced on the event stream (Kiro honours neither). Sans-I/O.

`StreamLimiter.feed(event)` returns the events to pass on. Once `done` is True the limiter has
ended the response itself: the caller stops reading and closes the upstream call (Kiro keeps
generating, and billing, until the connection goes).

Stop strings
    Apply to the answer text only, never to thinking or tool arguments. Text is held back only
    while its end could still be the start of a stop string, across `TextDelta` boundaries; any
    other event releases held text first. The response ends where a stop string is first
    *completed* (what a token-by-token generator does), so the result does not depend on how the
    upstream split its text: with stops ``["abc", "b"]`` the text ``"abc"`` ends before ``"b"``.
    The text before the stop string goes out, the stop string and the rest do not; then an
    estimated `Usage` (when `input_tokens` is known) and `MessageStop("stop_sequence")`.

max_tokens
    Counts the output as it streams: answer text, thinking and tool names and arguments, with
    `count_tokens` (by default the same upward-biased estimate the usage figures use, so the
    reported `completion_tokens` of a cut answer is about `max_tokens`). `max_tokens` is an upper
    bound, and the estimate over-counts most text a little, so the cut comes slightly EARLY rather
    than late: the answer is never longer than the budget by our count. When the count reaches
    the budget the current delta is cut to the longest prefix that fits, then `Usage` and
    `MessageStop("max_tokens")` (OpenAI finish `length`). The estimated `Usage` counts all output
    generated up to our stop: for a max_tokens cut that is `max_tokens` itself; for a stop string
    it includes the delta the stop string completed in (an over- rather than an under-count).

Tool calls under max_tokens
    Arguments stream as they come. A budget that runs out before a call starts ends the response
    without starting it. One that runs out inside a call sends the argument text that fits and
    ends with `MessageStop("max_tokens")` *without* `ToolCallEnd`: the call is reported with
    finish `length` and incomplete arguments, exactly as OpenAI does; it is never presented as
    a finished call.

The upstream's own `MessageStop` (and the `Usage` before it) passes through unchanged. With no
limits the limiter is a pass-through returning the very event objects it was given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ki2api.core.events import (
    Event,
    MessageStop,
    StopReason,
    TextDelta,
    ThinkingDelta,
    ToolArgsDelta,
    ToolCallStart,
    Usage,
)
from ki2api.core.pieces import Pieces
from ki2api.core.tokens import estimate_text_tokens

__all__ = ["MAX_STOP_CHARS", "MAX_STOP_SEQUENCES", "StopMatcher", "StreamLimiter", "TokenBudget"]

# Caps the frontends enforce on a request's stop strings (400 past them): OpenAI allows 4, the
# Anthropic API documents no maximum; 32 of up to 1,000 characters each is far beyond any client
# seen, and keeps the matcher's worst case (stops x length per delta) small.
MAX_STOP_SEQUENCES = 32
MAX_STOP_CHARS = 1_000

# Counting is the costly part (a BPE tokenizer takes ~0.3 us per character), so text is only
# counted once an upper bound of its count gets near the cap, and then in blocks of at least
# this many characters: counting each small delta on its own would round each one up and split
# words, re-counting everything would be quadratic.
_SETTLE_CHARS = 192
_MAX_TOKENS_PER_BYTE = 2
_GALLOP_START = 256


class TokenBudget:
    """A running token count of streamed output with a cap (`limit` None: count only).

    Text is counted only when the cap could be near: while the exact count of the settled text
    plus a cheap upper bound of the rest (`_MAX_TOKENS_PER_BYTE` per UTF-8 byte, + 1 per delta)
    stays under the cap, nothing is counted. `count_tokens` must respect that bound: the script
    estimator does (at most one token per character) and so does any byte-level BPE with a bias
    of up to x2 (ours: x1.17, and x1.32 more for the newest vocabulary).
    """

    def __init__(self, limit: int | None, count_tokens: Callable[[str], int]) -> None:
        self.limit = limit
        self._count = count_tokens
        self._settled = 0  # exact count of the settled text
        self._pieces = Pieces()  # the text not settled yet (compacted once per batch)
        self._bound = 0  # an upper bound of the count of `_pieces`

    @property
    def used(self) -> int:
        return self._settled + self._count("".join(self._pieces))

    def fit(self, text: str) -> tuple[str, bool]:
        """Count `text`; return (the longest prefix within the cap, whether the cap was reached)."""
        size = len(text) if text.isascii() else len(text.encode())
        bound = _MAX_TOKENS_PER_BYTE * size + 1
        if self.limit is None or self._settled + self._bound + bound < self.limit:
            self._pieces.append(text)
            self._bound += bound
            return text, False
        pending = "".join(self._pieces)
        if len(pending) >= _SETTLE_CHARS:
            self._settled += self._count(pending)
            pending = ""
        exact = self._count(pending + text)
        if self._settled + exact < self.limit:
            self._pieces, self._bound = Pieces(pending + text), exact
            return text, False
        lo, hi = self._gallop(pending, text)  # the longest prefix with count <= limit
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._settled + self._count(pending + text[:mid]) <= self.limit:
                lo = mid
            else:
                hi = mid - 1
        self._pieces, self._bound = Pieces(pending + text[:lo]), exact
        return text[:lo], True

    def compact(self) -> None:
        self._pieces.compact()

    def fit_all(self, texts: list[str]) -> bool:
        """`fit` for each text in order when none of them comes near the cap (then True: all
        fit whole); else False, and nothing is counted."""
        joined = "".join(texts)
        size = len(joined) if joined.isascii() else len(joined.encode())
        bound = _MAX_TOKENS_PER_BYTE * size + len(texts)  # the sum of each text's own bound
        if self.limit is not None and self._settled + self._bound + bound >= self.limit:
            return False
        self._pieces.append(joined)
        self._bound += bound
        return True

    def _gallop(self, pending: str, text: str) -> tuple[int, int]:
        """Bounds (a prefix length that fits, one that may not) found by doubling from a short
        prefix: the work follows the length that fits, not the delta's (a huge delta with a
        small budget is not counted whole ~20 times)."""
        assert self.limit is not None
        lo, step = 0, _GALLOP_START
        while step < len(text) and self._settled + self._count(pending + text[:step]) <= self.limit:
            lo, step = step, step * 2
        return lo, min(step, len(text)) - (1 if step < len(text) else 0)


class StopMatcher:
    """Finds stop strings in text arriving in pieces; holds back only a possible stop prefix.

    Linear time: a completed stop is found with `str.find` over the held text and the new text
    (the held text is shorter than the longest stop), and the hold-back comes from one KMP
    automaton per stop, advanced over the new text only (over at most its last len(stop) - 1
    characters: the state depends on nothing older). So a delta costs O(stops x its length),
    however long the stops, never a rescan of what was already seen.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(dict.fromkeys(s for s in stops if s))
        self._fail = [_prefix_function(s) for s in self.stops]
        self._states = [0] * len(self.stops)
        self.held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to release, whether a stop string completed). After a match the text
        returned is everything before the stop string and `held` is cleared."""
        s = self.held + text
        match = self._first_completed(s)
        if match is not None:
            self.held = ""
            return s[:match], True
        keep = self._advance(text)
        self.held = s[len(s) - keep :]
        return s[: len(s) - keep], False

    def release(self) -> str:
        out, self.held = self.held, ""
        self._states = [0] * len(self.stops)
        return out

    def _first_completed(self, s: str) -> int | None:
        """Start of the stop string completed earliest (ties: the longer one), or None."""
        best: tuple[int, int] | None = None
        for stop in self.stops:
            i = s.find(stop)
            if i >= 0 and (best is None or (i + len(stop), i) < best):
                best = (i + len(stop), i)
        return None if best is None else best[1]

    def _advance(self, text: str) -> int:
        """Each stop's automaton over `text`; the longest end that is a proper stop prefix."""
        keep = 0
        for j, stop in enumerate(self.stops):
            state = _kmp(stop, self._fail[j], self._states[j], text)
            self._states[j] = state
            keep = max(keep, state)
        return keep


def _prefix_function(stop: str) -> list[int]:
    """KMP: fail[i] = length of the longest proper border of stop[: i + 1]."""
    fail = [0] * len(stop)
    k = 0
    for i in range(1, len(stop)):
        while k and stop[i] != stop[k]:
            k = fail[k - 1]
        if stop[i] == stop[k]:
            k += 1
        fail[i] = k
    return fail


def _kmp(stop: str, fail: list[int], state: int, text: str) -> int:
    """The longest end of (what was seen) + `text` that is a proper prefix of `stop`, given
    `state` for what was seen (no completed match in between: `find` saw to that)."""
    if len(text) >= len(stop) - 1:  # the answer lies within the last len(stop) - 1 characters
        state, text = 0, text[len(text) - (len(stop) - 1) :] if len(stop) > 1 else ""
    for ch in text:
        while state and stop[state] != ch:
            state = fail[state - 1]
        if stop[state] == ch:
            state += 1
            if state == len(stop):  # cannot happen after `find`; stay a proper prefix
                state = fail[state - 1]
    return state


class StreamLimiter:
    """Enforces `max_tokens` and `stop` on one response's events (see the module docstring).

    `input_tokens`, when given, goes into the estimated `Usage` sent before a stop of our own
    (the upstream's usage arrives at the end, which is never read); without it no `Usage` is
    sent and the encoder's own fallbacks apply. A function is asked only for that `Usage`.
    """

    def __init__(
        self,
        *,
        max_tokens: int | None,
        stop: Sequence[str],
        input_tokens: int | Callable[[], int] | None = None,
        count_tokens: Callable[[str], int] = estimate_text_tokens,
    ) -> None:
        self._matcher = StopMatcher(stop)
        self._no_stops = not self._matcher.stops
        self._passthrough = max_tokens is None and self._no_stops
        self._budget = TokenBudget(max_tokens, count_tokens)
        self._input_tokens = input_tokens
        self._upstream_usage: Usage | None = None
        self._done = False

    @property
    def done(self) -> bool:
        """True once the limiter ended the response itself: stop reading, close the upstream."""
        return self._done

    def feed(self, event: Event) -> list[Event]:
        """The events to pass on for `event` (none once `done`)."""
        if self._passthrough:
            return [event]
        if self._done:
            return []
        if isinstance(event, TextDelta):
            return self._text(event)
        return self._other(event, [] if self._no_stops else self._release_held())

    def feed_batch(self, events: list[Event]) -> list[Event]:
        """`feed` each event in order, until `done`: all the events to pass on (with no limits,
        `events` itself)."""
        if self._passthrough:
            return events
        self._budget.compact()  # what the batches before this one added
        if self._no_stops and not self._done:
            whole = self._far_from_cap(events)
            if whole is not None:
                return whole
        out: list[Event] = []
        feed = self.feed
        for event in events:
            if self._done:
                break
            out += feed(event)
        return out

    def _far_from_cap(self, events: list[Event]) -> list[Event] | None:
        """With no stop strings: the whole batch, counted in one step, when all of its output
        is far from the cap (what `feed` one by one gives then); else None, nothing counted."""
        pieces: list[str] = []
        usage: Usage | None = None
        for event in events:
            if isinstance(event, TextDelta | ThinkingDelta):
                pieces.append(event.text)
            elif isinstance(event, ToolArgsDelta):
                pieces.append(event.fragment)
            elif isinstance(event, ToolCallStart):
                pieces.append(event.name)
            elif isinstance(event, Usage):
                usage = event
        if not self._budget.fit_all(pieces):
            return None
        if usage is not None:
            self._upstream_usage = usage
        return [e for e in events if not isinstance(e, TextDelta) or e.text]

    def _other(self, event: Event, out: list[Event]) -> list[Event]:
        piece = _output_piece(event)
        if piece is not None:
            fitted, full = self._budget.fit(piece)
            if full:
                return self._end([*out, *_cut(event, fitted)], "max_tokens")
        elif isinstance(event, Usage):
            self._upstream_usage = event
        out.append(event)
        return out

    def _text(self, event: TextDelta) -> list[Event]:
        text = event.text
        fitted, full = self._budget.fit(text)
        if self._no_stops and not full:  # nothing to cut or hold back: the event itself
            return [event] if text else []
        released, stopped = self._matcher.feed(fitted)
        if stopped:
            return self._end(_text_events(released), "stop_sequence")
        if full:
            return self._end(_text_events(released + self._matcher.release()), "max_tokens")
        return _text_events(released)

    def _release_held(self) -> list[Event]:
        return _text_events(self._matcher.release())

    def _end(self, out: list[Event], reason: StopReason) -> list[Event]:
        self._done = True
        out = [e for e in out if not _empty(e)]
        usage = self._usage()
        if usage is not None:
            out.append(usage)
        out.append(MessageStop(reason))
        return out

    def _usage(self) -> Usage | None:
        seen = self._upstream_usage
        if seen is not None:
            return Usage(
                input_tokens=seen.input_tokens,
                output_tokens=self._budget.used,
                cache_read_input_tokens=seen.cache_read_input_tokens,
                cache_creation_input_tokens=seen.cache_creation_input_tokens,
            )
        tokens = self._input_tokens
        if tokens is None:
            return None
        tokens = tokens() if callable(tokens) else tokens
        return Usage(input_tokens=tokens, output_tokens=self._budget.used)


def _output_piece(event: Event) -> str | None:
    """The generated text an event carries, as counted against max_tokens (None: not output)."""
    if isinstance(event, ThinkingDelta):
        return event.text
    if isinstance(event, ToolCallStart):
        return event.name
    if isinstance(event, ToolArgsDelta):
        return event.fragment
    return None


def _cut(event: Event, fitted: str) -> list[Event]:
    """What goes out of an event the budget ran out in: never the start of a new tool call."""
    if isinstance(event, ThinkingDelta):
        return [ThinkingDelta(fitted)]
    if isinstance(event, ToolArgsDelta):
        return [ToolArgsDelta(event.index, fitted)]
    return []


def _text_events(text: str) -> list[Event]:
    return [TextDelta(text)] if text else []


def _empty(event: Event) -> bool:
    if isinstance(event, TextDelta | ThinkingDelta):
        return not event.text
    return isinstance(event, ToolArgsDelta) and not event.fragment
