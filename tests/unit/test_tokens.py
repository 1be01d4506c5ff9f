"""core.tokens: text and conversation estimates, with the real tokenizer and with the fallback.

Checked through relationships (order by script, growth, bias against the measured ratios),
not restated numbers.
"""

from __future__ import annotations

from typing import Any

import pytest

from ki2api.core.messages import (
    Conversation,
    ImagePart,
    Message,
    Part,
    TextPart,
    ToolResultPart,
    ToolSpec,
    ToolUsePart,
)
from ki2api.core.tokenizer import (
    NEW_VOCABULARY_FACTOR,
    ClaudeLegacyTokenizer,
    ScriptEstimator,
    TokenCounter,
)
from ki2api.core.tokens import (
    IMAGE_TOKENS,
    estimate_conversation_tokens,
    estimate_json_tokens,
    estimate_text_tokens,
)

ENGLISH = "The quick brown fox jumps over the lazy dog. " * 20
CODE = "def add(a: int, b: int) -> int:\n    return a + b\n\n" * 20
CHINESE = "我们今天讨论一下这个项目的架构设计和实现细节。" * 20
JAPANESE = "これは日本語のテキストです。カタカナもあります。" * 20
KOREAN = "안녕하세요 반갑습니다 오늘은 날씨가 좋네요" * 20
RUSSIAN = "Съешь же ещё этих мягких французских булок, да выпей чаю. " * 20

_LEGACY = ClaudeLegacyTokenizer.load()


def _counters() -> list[Any]:
    legacy = pytest.mark.skipif(_LEGACY is None, reason="tiktoken not installed")
    return [
        pytest.param("script", id="script"),
        pytest.param("legacy", id="tokenizer", marks=legacy),
    ]


@pytest.fixture(params=_counters())
def counter(request: pytest.FixtureRequest) -> TokenCounter:
    if request.param == "script":
        return TokenCounter(ScriptEstimator())
    assert _LEGACY is not None
    return TokenCounter(_LEGACY)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", 0), ("a", 1), (" ", 1), ("字", 1), ("é", 1)],
    ids=["empty", "one-ascii", "space", "one-cjk", "one-accent"],
)
def test_small_values_of_the_fallback(text: str, expected: int) -> None:
    assert estimate_text_tokens(text, counter=TokenCounter(ScriptEstimator())) == expected


@pytest.mark.parametrize("text", ["a", " ", "字", "é", "ok"])
def test_small_values_are_one_or_two(text: str, counter: TokenCounter) -> None:
    assert 1 <= estimate_text_tokens(text, counter=counter) <= 2


@pytest.mark.parametrize(
    ("text", "truth_lower_bound"),
    [
        # chars/4 measured 0.88x (prose), 0.82x (code) of Claude's tokenizer: the fallback
        # must not fall under the implied truth.
        (ENGLISH, len(ENGLISH) / 4 / 0.88),
        (CODE, len(CODE) / 4 / 0.82),
        # chars/4 measured 0.48x for Chinese mixed with markdown; pure Chinese is denser.
        (CHINESE, len(CHINESE) / 4 / 0.48),
    ],
    ids=["english", "code", "chinese"],
)
def test_fallback_biased_up_against_measurements(text: str, truth_lower_bound: float) -> None:
    est = estimate_text_tokens(text, counter=TokenCounter(ScriptEstimator()))
    assert est >= truth_lower_bound
    assert est <= truth_lower_bound * 2.5  # biased, not absurd


@pytest.mark.parametrize(
    ("dense", "sparse"),
    [
        (CHINESE, ENGLISH),
        (JAPANESE, ENGLISH),
        (KOREAN, ENGLISH),
        (CHINESE, RUSSIAN),
        (RUSSIAN, ENGLISH),
    ],
    ids=["zh>en", "ja>en", "ko>en", "zh>ru", "ru>en"],
)
def test_tokens_per_char_order_by_script(dense: str, sparse: str, counter: TokenCounter) -> None:
    def per_char(text: str) -> float:
        return estimate_text_tokens(text, counter=counter) / len(text)

    assert per_char(dense) > per_char(sparse)


@pytest.mark.parametrize("text", [ENGLISH, CODE, CHINESE, JAPANESE, KOREAN, RUSSIAN])
def test_monotonic_in_whole_words(text: str, counter: TokenCounter) -> None:
    words = text.split(" ")
    prefixes = [" ".join(words[:n]) for n in range(len(words) + 1)]
    counts = [estimate_text_tokens(p, counter=counter) for p in prefixes]
    assert counts == sorted(counts)
    doubled = estimate_text_tokens(text + text, counter=counter)
    assert doubled >= 2 * estimate_text_tokens(text, counter=counter) - 2


@pytest.mark.parametrize(
    ("a", "b"),
    [(ENGLISH, CHINESE), (CODE, RUSSIAN), ("abc ", "字字")],
    ids=["en+zh", "code+ru", "tiny"],
)
def test_roughly_additive(a: str, b: str, counter: TokenCounter) -> None:
    joined = estimate_text_tokens(a + b, counter=counter)
    parts = estimate_text_tokens(a, counter=counter) + estimate_text_tokens(b, counter=counter)
    assert parts * 0.95 - 2 <= joined <= parts + 1


def test_json_counts_more_than_the_same_chars_of_prose(counter: TokenCounter) -> None:
    value = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    prose = "the city is a string and it is required here for the cat"
    assert estimate_json_tokens(value, counter=counter) > estimate_text_tokens(
        prose, counter=counter
    )


@pytest.mark.parametrize(
    ("newer", "older"),
    [("claude-opus-4.7", "claude-opus-4.6"), ("claude-sonnet-5", "claude-sonnet-4.5")],
    ids=["opus-4.7", "sonnet-5"],
)
def test_newer_vocabulary_counts_more(newer: str, older: str, counter: TokenCounter) -> None:
    old = estimate_text_tokens(ENGLISH, model_id=older, counter=counter)
    new = estimate_text_tokens(ENGLISH, model_id=newer, counter=counter)
    assert new >= old * NEW_VOCABULARY_FACTOR - 1
    conv_old = Conversation(older, (Message("user", (TextPart(ENGLISH),)),))
    conv_new = Conversation(newer, conv_old.messages)
    assert estimate_conversation_tokens(conv_new, counter=counter) > estimate_conversation_tokens(
        conv_old, counter=counter
    )


def _conv(
    *messages: Message, system: tuple[str, ...] = (), tools: tuple[ToolSpec, ...] = ()
) -> Conversation:
    return Conversation("claude-sonnet-4", messages, system=system, tools=tools)


def _user(*parts: Part) -> Message:
    return Message("user", parts)


BASE = _conv(_user(TextPart("hello there")))
TOOL = ToolSpec("get_weather", "Weather for a city.", {"type": "object", "properties": {}})

# (id, bigger conversation, what it adds over BASE at least)
GROWTH: list[tuple[str, Conversation, int]] = [
    ("system", _conv(_user(TextPart("hello there")), system=("Be terse. " * 50,)), 100),
    ("image", _conv(_user(TextPart("hello there"), ImagePart("image/png", "AAAA"))), IMAGE_TOKENS),
    ("tools", _conv(_user(TextPart("hello there")), tools=(TOOL,)), 300),
    (
        "more-messages",
        _conv(
            _user(TextPart("hello there")),
            Message("assistant", (TextPart("hi"),)),
            _user(TextPart("again")),
        ),
        8,
    ),
    (
        "tool-use-and-result",
        _conv(
            _user(TextPart("hello there")),
            Message("assistant", (ToolUsePart("t1", "get_weather", {"city": "Paris " * 40}),)),
            _user(ToolResultPart("t1", (TextPart("sunny " * 100),))),
        ),
        120,
    ),
]


@pytest.mark.parametrize(("conv", "at_least"), [g[1:] for g in GROWTH], ids=[g[0] for g in GROWTH])
def test_conversation_grows_with_content(
    conv: Conversation, at_least: int, counter: TokenCounter
) -> None:
    grown = estimate_conversation_tokens(conv, counter=counter)
    assert grown - estimate_conversation_tokens(BASE, counter=counter) >= at_least


def test_conversation_counts_more_than_its_text(counter: TokenCounter) -> None:
    whole = estimate_conversation_tokens(BASE, counter=counter)
    assert whole > estimate_text_tokens("hello there", counter=counter)


def test_empty_conversation_still_has_overhead(counter: TokenCounter) -> None:
    assert estimate_conversation_tokens(_conv(), counter=counter) > 0


def test_the_default_counter_is_used_without_one() -> None:
    conv = _conv(_user(TextPart(ENGLISH)))
    assert estimate_conversation_tokens(conv) > estimate_text_tokens(ENGLISH) > 0


def test_image_data_is_never_tokenized() -> None:
    counter = TokenCounter(ScriptEstimator(), min_cached_chars=0)
    conv = _conv(_user(ImagePart("image/png", "A" * 1_000_000)))
    assert estimate_conversation_tokens(conv, counter=counter) < IMAGE_TOKENS + 100
    assert counter.tokenized_chars == 0
