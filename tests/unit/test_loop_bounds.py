"""Bounded work per request (issue 9): token counting, stop matching, schema checks. Pure."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from ki2api.core.messages import Conversation, Message, TextPart
from ki2api.core.stream_limits import StopMatcher
from ki2api.core.tokenizer import (
    BYTES_PER_TOKEN,
    MAX_EXACT_CHARS,
    SAMPLE_SLICE_CHARS,
    SAMPLE_SLICES,
    ClaudeLegacyTokenizer,
    ScriptEstimator,
    TokenCounter,
    TokenizeBudget,
    crude_count,
    load_tokenizer,
)
from ki2api.core.tokens import estimate_conversation_tokens
from ki2api.frontends.schema_safety import (
    MAX_SCHEMA_NODES,
    SchemaProblem,
    safe_validator,
)

PROSE = "Streaming responses arrive as server-sent events, one chunk at a time. "
CHINESE = "网关把请求翻译成上游协议，并把流式事件转换回客户端格式。"


def _counter() -> TokenCounter:
    return TokenCounter(load_tokenizer())


# --- token counting ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", [PROSE * 5_000, CHINESE * 3_000, (PROSE + CHINESE) * 2_000])
def test_a_long_text_is_sampled_not_tokenized_whole(text: str) -> None:
    assert len(text) > MAX_EXACT_CHARS
    counter = _counter()
    sampled = counter.count(text)
    assert counter.tokenized_chars == SAMPLE_SLICES * SAMPLE_SLICE_CHARS
    exact = TokenCounter(counter.tokenizer, max_exact_chars=10**9).count(text)
    assert exact <= sampled <= exact * 1.15  # an over-count, and a close one


@pytest.mark.parametrize(
    ("budget", "texts_tokenized"),
    [(10**9, 3), (45_000, 2), (0, 0)],
    ids=["enough", "two-of-three", "none"],
)
def test_a_request_tokenizes_at_most_its_budget(budget: int, texts_tokenized: int) -> None:
    counter = _counter()
    texts = [f"{i} " + PROSE * 280 for i in range(3)]  # 19,882 characters each
    conv = Conversation("m", tuple(Message("user", (TextPart(t),)) for t in texts))
    estimate = estimate_conversation_tokens(conv, counter=counter, tokenize_chars=budget)
    assert counter.tokenized_chars == texts_tokenized * len(texts[0])
    exact = estimate_conversation_tokens(conv, counter=_counter(), tokenize_chars=10**9)
    assert estimate >= exact  # what is not tokenized gets the crude bound: never less


def test_cached_texts_cost_nothing_from_the_budget() -> None:
    counter = _counter()
    text = PROSE * 100
    first = counter.count(text)
    seen = counter.tokenized_chars
    assert counter.count(text, budget=TokenizeBudget(0)) == first
    assert counter.tokenized_chars == seen


@pytest.mark.parametrize(
    "text", [PROSE * 10, CHINESE * 10, "Съешь же ещё этих мягких булок" * 10, "😀" * 40, "{}" * 50]
)
def test_the_crude_bound_is_over_the_script_ratios(text: str) -> None:
    assert crude_count(text) >= ScriptEstimator().count(text) - 1
    assert crude_count(text) == len(text.encode()) / BYTES_PER_TOKEN


def test_the_crude_bound_is_near_or_over_the_biased_tokenizer() -> None:
    legacy = ClaudeLegacyTokenizer.load()
    if legacy is None:
        pytest.skip("tiktoken not installed")
    counter = TokenCounter(legacy)
    # prose: well over; Chinese: the script ratio (1 per character), ~4 % under BPE x 1.17,
    # which is itself ~8 % over Claude's real count (docs/usage.md, Accuracy)
    for text, least in ((PROSE * 50, 1.0), (CHINESE * 50, 0.95)):
        assert counter.count(text, budget=TokenizeBudget(0)) >= least * counter.count(text)


def test_fifteen_megabytes_are_counted_in_bounded_work() -> None:
    text = (PROSE + CHINESE) * (15_000_000 // len(PROSE + CHINESE))
    conv = Conversation("m", (Message("user", (TextPart(text),)),))
    counter = _counter()
    assert estimate_conversation_tokens(conv, counter=counter) > 3_000_000
    assert counter.tokenized_chars <= SAMPLE_SLICES * SAMPLE_SLICE_CHARS


# --- stop matching -------------------------------------------------------------------------------


def _reference_holdback(s: str, stops: list[str]) -> int:
    return max(
        (k for stop in stops for k in range(1, len(stop)) if s.endswith(stop[:k])), default=0
    )


@pytest.mark.parametrize("seed", range(40))
def test_the_matcher_agrees_with_a_brute_force_reference(seed: int) -> None:
    rng = random.Random(seed)
    stops = ["".join(rng.choice("ab") for _ in range(rng.randint(1, 7))) for _ in range(3)]
    text = "".join(rng.choice("abc") for _ in range(60))
    matcher = StopMatcher(stops)
    out, seen, stopped = "", "", False
    pos = 0
    while pos < len(text) and not stopped:
        piece = text[pos : pos + rng.randint(1, 9)]
        pos += len(piece)
        seen += piece
        released, stopped = matcher.feed(piece)
        out += released
        if not stopped:
            assert len(matcher.held) == _reference_holdback(seen, stops)
    ends = [(seen.find(s) + len(s), seen.find(s)) for s in stops if s in seen]
    if ends:
        assert stopped and out == seen[: min(ends)[1]]
    else:
        assert not stopped and out + matcher.held == seen


def test_long_adversarial_stops_cost_little_per_delta() -> None:
    stops = [("a" * i) + "b" + "a" * (999 - i) for i in range(0, 960, 30)]  # 32 x 1,000
    matcher = StopMatcher(stops)
    started = time.perf_counter()
    for _ in range(2_000):
        released, stopped = matcher.feed("a" * 50)
        assert not stopped
    assert len(matcher.held) == 930  # the longest end that starts a stop: "a" * 930 + "b"
    assert time.perf_counter() - started < 2.0  # ~0.3 s; the old rescan took ~6 s


# --- schemas -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"$ref": "#"}, "refers back"),
        ({"allOf": [{"$ref": "#/$defs/a"}], "$defs": {"a": {"anyOf": [{"$ref": "#"}]}}}, "back"),
        ({"$defs": {"a": {"not": {"$ref": "#/$defs/a"}}}}, "refers back"),
        ({"type": "string", "pattern": "(a)\\1"}, "does not run"),
        ({"type": "string", "pattern": "(?=a)a"}, "does not run"),
        ({"patternProperties": {"(?<=x)y": {}}}, "does not run"),
        ({"patternProperties": {"a": {}}, "unevaluatedProperties": False}, "not supported"),
        ({"anyOf": [{"type": "string"}] * (MAX_SCHEMA_NODES + 1)}, "more than"),
    ],
    ids=["self", "via-allOf", "via-not", "backref", "lookahead", "lookbehind", "uneval", "size"],
)
def test_refused_schemas(schema: dict[str, Any], problem: str) -> None:
    with pytest.raises(SchemaProblem, match=problem):
        safe_validator(schema)


@pytest.mark.parametrize(
    ("schema", "good", "bad"),
    [
        (
            {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}},
            {"kids": [{"kids": []}]},
            {"kids": [{"kids": 1}]},
        ),
        ({"type": "string", "pattern": "^(a+)+$"}, "aaaa", "a" * 40 + "b"),
        (
            {"patternProperties": {"^(a+)+$": {"type": "integer"}}, "additionalProperties": False},
            {"aaa": 1},
            {"a" * 40 + "b": 1},
        ),
        ({"patternProperties": {"^x": {"type": "integer"}}}, {"xy": 1}, {"xy": "s"}),
    ],
    ids=["tree", "catastrophic-pattern", "catastrophic-property", "pattern-properties"],
)
def test_safe_schemas_validate_in_linear_time(schema: dict[str, Any], good: Any, bad: Any) -> None:
    validator = safe_validator(schema)
    started = time.perf_counter()
    assert validator.is_valid(good)
    assert not validator.is_valid(bad)
    assert time.perf_counter() - started < 1.0  # Python's re: 2^40 steps, never ending
