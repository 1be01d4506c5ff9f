"""StreamLimiter: stop strings and max_tokens enforced on the core event stream."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from ki2api.core.events import (
    Event,
    MessageStop,
    StopReason,
    TextDelta,
    ThinkingDelta,
    ToolArgsDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
    aggregate,
)
from ki2api.core.stream_limits import StopMatcher, StreamLimiter, TokenBudget
from ki2api.core.tokens import estimate_text_tokens

UPSTREAM_USAGE = Usage(input_tokens=11, output_tokens=99, estimated=False)


def upstream(*deltas: str, reason: StopReason = "end_turn") -> list[Event]:
    """Text deltas as the upstream sends them, then its usage and its own stop."""
    return [*(TextDelta(d) for d in deltas), UPSTREAM_USAGE, MessageStop(reason)]


def run(limiter: StreamLimiter, events: Sequence[Event]) -> tuple[list[Event], int | None]:
    """All output events, and the index of the input event after which `done` became True."""
    out: list[Event] = []
    done_at: int | None = None
    for i, ev in enumerate(events):
        out.extend(limiter.feed(ev))
        if limiter.done and done_at is None:
            done_at = i
    return out, done_at


def text_of(events: Sequence[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


# --- stop strings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StopCase:
    id: str
    stops: tuple[str, ...]
    deltas: tuple[str, ...]
    text: str
    reason: StopReason  # the final MessageStop's reason
    cut: bool  # the limiter ended the stream itself


STOP_CASES = [
    StopCase("in-one-delta", ("END",), ("hello END world",), "hello ", "stop_sequence", True),
    StopCase(
        "across-deltas", ("END",), ("hello E", "N", "D world"), "hello ", "stop_sequence", True
    ),
    StopCase("at-very-start", ("Hi",), ("Hi there",), "", "stop_sequence", True),
    StopCase("start-split", ("Hi",), ("H", "i there"), "", "stop_sequence", True),
    StopCase(
        "never-matches", ("END",), ("the EN", "d of it EN"), "the ENd of it EN", "end_turn", False
    ),
    StopCase("prefix-released-at-end", ("\n\n",), ("a\n",), "a\n", "end_turn", False),
    StopCase(
        "several-stops", ("zzz", "STOP", "yy"), ("aa STO", "P yy"), "aa ", "stop_sequence", True
    ),
    StopCase("overlap-first-completed", ("abc", "b"), ("xabc",), "xa", "stop_sequence", True),
    StopCase("overlap-split", ("abc", "b"), ("xa", "bc"), "xa", "stop_sequence", True),
    StopCase("prefix-stops-longer-first", ("ab", "abcd"), ("xab",), "x", "stop_sequence", True),
    StopCase("same-end-longer-wins", ("cd", "bcd"), ("abcd",), "a", "stop_sequence", True),
    StopCase("self-overlap", ("aab",), ("aaa", "ab"), "aa", "stop_sequence", True),
    StopCase("multibyte", ("。",), ("你好", "。再见"), "你好", "stop_sequence", True),
    StopCase("emoji-stop", ("🛑",), ("go 🚦", "🛑 no"), "go 🚦", "stop_sequence", True),
    StopCase("empty-stop-ignored", ("",), ("abc",), "abc", "end_turn", False),
    StopCase("duplicate-stops", ("x", "x"), ("abxcd",), "ab", "stop_sequence", True),
    StopCase("stop-is-whole-delta", ("###",), ("a", "###", "b"), "a", "stop_sequence", True),
]


@pytest.mark.parametrize("case", STOP_CASES, ids=[c.id for c in STOP_CASES])
def test_stop_strings(case: StopCase) -> None:
    limiter = StreamLimiter(max_tokens=None, stop=case.stops, input_tokens=7)
    out, done_at = run(limiter, upstream(*case.deltas))
    assert text_of(out) == case.text
    assert isinstance(out[-1], MessageStop) and out[-1].reason == case.reason
    assert (done_at is not None) == case.cut
    if case.cut:
        assert done_at is not None and done_at < len(case.deltas)  # before the upstream's stop
        assert isinstance(out[-2], Usage) and out[-2].estimated and out[-2].input_tokens == 7
    else:
        assert out[-2:] == [UPSTREAM_USAGE, MessageStop("end_turn")]
    assert all(not (isinstance(e, TextDelta) and not e.text) for e in out)


@pytest.mark.parametrize("case", STOP_CASES, ids=[c.id for c in STOP_CASES])
def test_stop_result_does_not_depend_on_how_the_text_was_split(case: StopCase) -> None:
    whole = "".join(case.deltas)
    for split in range(len(whole) + 1):
        limiter = StreamLimiter(max_tokens=None, stop=case.stops)
        out, _ = run(limiter, upstream(whole[:split], whole[split:]))
        assert text_of(out) == case.text, split
        assert out[-1] == MessageStop(case.reason)


@pytest.mark.parametrize(
    ("stops", "delta", "released", "held"),
    [
        (("END",), "abcE", "abc", "E"),
        (("END",), "abcEN", "abc", "EN"),
        (("END",), "abcX", "abcX", ""),
        (("END", "NDX"), "abEND"[:4], "ab", "EN"),
        (("\n\n",), "line\n", "line", "\n"),
        (("ab", "bbb"), "xbb", "x", "bb"),
    ],
    ids=["one-char", "two-chars", "no-prefix", "longest-of-several", "newline", "longer-prefix"],
)
def test_only_a_possible_stop_prefix_is_held_back(
    stops: tuple[str, ...], delta: str, released: str, held: str
) -> None:
    matcher = StopMatcher(stops)
    assert matcher.feed(delta) == (released, False)
    assert matcher.held == held


@pytest.mark.parametrize(
    "event",
    [
        ThinkingDelta("the END is near"),
        ToolArgsDelta(0, '{"q": "END"}'),
        ToolCallStart(0, "call_1", "END"),
    ],
    ids=["thinking", "tool-args", "tool-name"],
)
def test_stop_strings_do_not_apply_outside_the_answer_text(event: Event) -> None:
    limiter = StreamLimiter(max_tokens=None, stop=["END"])
    events: list[Event] = (
        [ToolCallStart(0, "call_1", "f")] if isinstance(event, ToolArgsDelta) else []
    )
    out, done_at = run(limiter, [*events, event, TextDelta("ok"), MessageStop("end_turn")])
    assert done_at is None
    assert event in out and text_of(out) == "ok"


def test_held_text_goes_out_before_a_following_non_text_event() -> None:
    limiter = StreamLimiter(max_tokens=None, stop=["END"])
    out, _ = run(limiter, [TextDelta("calling E"), ToolCallStart(0, "c1", "f"), ToolCallEnd(0)])
    assert out == [
        TextDelta("calling "),
        TextDelta("E"),
        ToolCallStart(0, "c1", "f"),
        ToolCallEnd(0),
    ]


# --- max_tokens ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetCase:
    id: str
    max_tokens: int
    events: tuple[Event, ...]
    expected: tuple[Event, ...]  # with count_tokens=len: one token per character


def _end(reason: StopReason = "max_tokens", used: int | None = None) -> tuple[Event, ...]:
    usage = () if used is None else (Usage(input_tokens=5, output_tokens=used),)
    return (*usage, MessageStop(reason))


BUDGET_CASES = [
    BudgetCase(
        "cut-inside-a-delta",
        5,
        (TextDelta("abc"), TextDelta("defgh"), MessageStop("end_turn")),
        (TextDelta("abc"), TextDelta("de"), *_end(used=5)),
    ),
    BudgetCase(
        "exactly-reached-at-a-delta-end",
        3,
        (TextDelta("abc"), TextDelta("d"), MessageStop("end_turn")),
        (TextDelta("abc"), *_end(used=3)),
    ),
    BudgetCase(
        "upstream-ends-first",
        10,
        (TextDelta("abc"), UPSTREAM_USAGE, MessageStop("end_turn")),
        (TextDelta("abc"), UPSTREAM_USAGE, MessageStop("end_turn")),
    ),
    BudgetCase(
        "thinking-counts",
        4,
        (ThinkingDelta("xyz"), TextDelta("abc")),
        (ThinkingDelta("xyz"), TextDelta("a"), *_end(used=4)),
    ),
    BudgetCase(
        "cut-inside-thinking",
        2,
        (ThinkingDelta("xyz", "sig"), TextDelta("abc")),
        (ThinkingDelta("xy"), *_end(used=2)),
    ),
    BudgetCase(
        "no-new-tool-call-without-budget",
        4,
        (TextDelta("ab"), ToolCallStart(0, "c1", "read"), ToolArgsDelta(0, "{}")),
        (TextDelta("ab"), *_end(used=4)),
    ),
    BudgetCase(
        "tool-call-cut-has-no-end",
        8,
        (
            ToolCallStart(0, "c1", "f"),
            ToolArgsDelta(0, '{"a":'),
            ToolArgsDelta(0, ' "long"}'),
            ToolCallEnd(0),
        ),
        (
            ToolCallStart(0, "c1", "f"),
            ToolArgsDelta(0, '{"a":'),
            ToolArgsDelta(0, ' "'),
            *_end(used=8),
        ),
    ),
    BudgetCase(
        "whole-tool-call-fits",
        20,
        (
            ToolCallStart(0, "c1", "f"),
            ToolArgsDelta(0, "{}"),
            ToolCallEnd(0),
            MessageStop("tool_use"),
        ),
        (
            ToolCallStart(0, "c1", "f"),
            ToolArgsDelta(0, "{}"),
            ToolCallEnd(0),
            MessageStop("tool_use"),
        ),
    ),
    BudgetCase(
        "upstream-usage-seen-is-reused",
        2,
        (Usage(3, 1, cache_read_input_tokens=2, estimated=False), TextDelta("abc")),
        (
            Usage(3, 1, cache_read_input_tokens=2, estimated=False),
            TextDelta("ab"),
            Usage(3, 2, cache_read_input_tokens=2),
            MessageStop("max_tokens"),
        ),
    ),
]


@pytest.mark.parametrize("case", BUDGET_CASES, ids=[c.id for c in BUDGET_CASES])
def test_max_tokens(case: BudgetCase) -> None:
    limiter = StreamLimiter(max_tokens=case.max_tokens, stop=(), input_tokens=5, count_tokens=len)
    out, done_at = run(limiter, case.events)
    assert tuple(out) == case.expected
    assert (done_at is not None) == (case.expected[-1] == MessageStop("max_tokens"))


def test_a_cut_tool_call_is_reported_incomplete_with_finish_length() -> None:
    case = next(c for c in BUDGET_CASES if c.id == "tool-call-cut-has-no-end")
    limiter = StreamLimiter(max_tokens=case.max_tokens, stop=(), count_tokens=len)
    completion = aggregate(run(limiter, case.events)[0])
    assert completion.stop_reason == "max_tokens"
    assert completion.tool_calls[0].arguments == '{"a": "'


@pytest.mark.parametrize(
    ("stops", "max_tokens", "deltas", "text", "reason"),
    [
        (("END",), 100, ("ab END cd",), "ab ", "stop_sequence"),
        (("END",), 4, ("ab END cd",), "ab E", "max_tokens"),
        (("END",), 3, ("ab", "cEN", "D"), "abc", "max_tokens"),
        (("END",), 6, ("ab", "cEN", "D"), "abc", "stop_sequence"),
        (("END",), 5, ("ab", "cEN", "D"), "abcEN", "max_tokens"),
    ],
    ids=[
        "stop-first",
        "budget-first",
        "budget-before-held",
        "stop-at-budget",
        "held-released-at-cut",
    ],
)
def test_stop_and_max_tokens_together(
    stops: tuple[str, ...],
    max_tokens: int,
    deltas: tuple[str, ...],
    text: str,
    reason: StopReason,
) -> None:
    limiter = StreamLimiter(max_tokens=max_tokens, stop=stops, count_tokens=len)
    out, done_at = run(limiter, upstream(*deltas))
    assert text_of(out) == text
    assert out[-1] == MessageStop(reason)
    assert done_at is not None


def test_the_default_estimate_never_lets_the_answer_exceed_the_budget() -> None:
    deltas = ["The quick brown fox jumps over the lazy dog. "] * 40 + ["你好世界"] * 30
    limiter = StreamLimiter(max_tokens=50, stop=(), input_tokens=1)
    out, done_at = run(limiter, upstream(*deltas))
    assert done_at is not None and out[-1] == MessageStop("max_tokens")
    usage = out[-2]
    assert isinstance(usage, Usage) and usage.output_tokens == 50
    assert 0 < estimate_text_tokens(text_of(out)) <= 50
    assert estimate_text_tokens(text_of(out) + "The quick") > 50  # and it used most of it


@pytest.mark.parametrize(
    "headroom", [None, 1.1, 1.02], ids=["no-cap", "cap-10%-above", "cap-2%-above"]
)
def test_the_running_count_matches_one_estimate_of_the_whole_text(headroom: float | None) -> None:
    pieces = ["Hi", " there", ",", " 世界", " é"] * 200
    whole = estimate_text_tokens("".join(pieces))
    budget = TokenBudget(None if headroom is None else int(whole * headroom), estimate_text_tokens)
    for p in pieces:
        assert budget.fit(p) == (p, False)
    assert whole <= budget.used <= whole * 1.02  # counting in blocks adds a little rounding


# --- pass-through ----------------------------------------------------------------------------


def test_without_limits_the_very_same_events_pass_through() -> None:
    events: list[Event] = [
        ThinkingDelta("hm"),
        TextDelta("a" * 10_000),
        ToolCallStart(0, "c", "f"),
        ToolArgsDelta(0, "{}"),
        ToolCallEnd(0),
        UPSTREAM_USAGE,
        MessageStop("tool_use"),
    ]
    limiter = StreamLimiter(max_tokens=None, stop=["", ""])
    for ev in events:
        out = limiter.feed(ev)
        assert len(out) == 1 and out[0] is ev
    assert not limiter.done


def test_nothing_comes_out_after_done() -> None:
    limiter = StreamLimiter(max_tokens=None, stop=["x"])
    assert limiter.feed(TextDelta("axb"))[-1] == MessageStop("stop_sequence")
    assert limiter.done
    assert limiter.feed(TextDelta("more")) == []
    assert limiter.feed(MessageStop("end_turn")) == []
