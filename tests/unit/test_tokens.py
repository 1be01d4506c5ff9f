"""core.tokens: the script-aware estimate, checked through relationships, not restated numbers."""

from __future__ import annotations

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


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", 0), ("a", 1), (" ", 1), ("字", 1), ("é", 1)],
    ids=["empty", "one-ascii", "space", "one-cjk", "one-accent"],
)
def test_small_values(text: str, expected: int) -> None:
    assert estimate_text_tokens(text) == expected


@pytest.mark.parametrize(
    ("text", "truth_lower_bound"),
    [
        # chars/4 measured 0.88x (prose), 0.82x (code) of Claude's tokenizer: the estimate
        # must not fall under the implied truth.
        (ENGLISH, len(ENGLISH) / 4 / 0.88),
        (CODE, len(CODE) / 4 / 0.82),
        # chars/4 measured 0.48x for Chinese mixed with markdown; pure Chinese is denser.
        (CHINESE, len(CHINESE) / 4 / 0.48),
    ],
    ids=["english", "code", "chinese"],
)
def test_biased_up_against_measurements(text: str, truth_lower_bound: float) -> None:
    est = estimate_text_tokens(text)
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
def test_tokens_per_char_order_by_script(dense: str, sparse: str) -> None:
    assert estimate_text_tokens(dense) / len(dense) > estimate_text_tokens(sparse) / len(sparse)


@pytest.mark.parametrize("text", [ENGLISH, CODE, CHINESE, JAPANESE, KOREAN, RUSSIAN, "😀x"])
def test_monotonic_in_length(text: str) -> None:
    counts = [estimate_text_tokens(text[:n]) for n in range(0, len(text) + 1, 7)]
    assert counts == sorted(counts)
    assert estimate_text_tokens(text + text) >= 2 * estimate_text_tokens(text) - 1


@pytest.mark.parametrize(
    ("a", "b"),
    [(ENGLISH, CHINESE), (CODE, RUSSIAN), ("abc", "字字")],
    ids=["en+zh", "code+ru", "tiny"],
)
def test_roughly_additive(a: str, b: str) -> None:
    joined = estimate_text_tokens(a + b)
    parts = estimate_text_tokens(a) + estimate_text_tokens(b)
    assert parts - 1 <= joined <= parts


def test_json_counts_more_than_the_same_chars_of_prose() -> None:
    value = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    text_equivalent = "x" * len('{"type":"object","properties":{"city":{"type":"string"}},')
    assert estimate_json_tokens(value) > estimate_text_tokens(text_equivalent)


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
            Message("assistant", (ToolUsePart("t1", "get_weather", {"city": "Paris" * 40}),)),
            _user(ToolResultPart("t1", (TextPart("sunny " * 100),))),
        ),
        200,
    ),
]


@pytest.mark.parametrize(("conv", "at_least"), [g[1:] for g in GROWTH], ids=[g[0] for g in GROWTH])
def test_conversation_grows_with_content(conv: Conversation, at_least: int) -> None:
    assert estimate_conversation_tokens(conv) - estimate_conversation_tokens(BASE) >= at_least


def test_conversation_counts_more_than_its_text() -> None:
    assert estimate_conversation_tokens(BASE) > estimate_text_tokens("hello there")


def test_empty_conversation_still_has_overhead() -> None:
    assert estimate_conversation_tokens(_conv()) > 0
