"""kiro.called_text: `[Called NAME with args: {...}]` text -> TextCall (table of chunkings)."""

from __future__ import annotations

import itertools

import pytest

from ki2api.kiro.stream.called_text import CalledTextFilter, Piece, TextCall

NAMES = {"get_weather": "get_weather", "run": "run", "short_ab12": "original.long.name"}


def run(chunks: list[str], names: dict[str, str] | None = None, **kw: int) -> list[Piece]:
    f = CalledTextFilter(NAMES if names is None else names, **kw)
    out: list[Piece] = []
    for chunk in chunks:
        out += f.feed(chunk)
    return out + f.flush()


def merged(pieces: list[Piece]) -> list[Piece]:
    """Adjacent text pieces joined (how text is split is not part of the contract)."""
    out: list[Piece] = []
    for p in pieces:
        if isinstance(p, str) and out and isinstance(out[-1], str):
            out[-1] += p
        else:
            out.append(p)
    return out


def call(name: str, args: str) -> TextCall:
    return TextCall(name, args)


# (id, whole text, expected pieces after merging adjacent text)
CASES: list[tuple[str, str, list[Piece]]] = [
    ("plain", "Hello world", ["Hello world"]),
    (
        "only-call",
        '[Called get_weather with args: {"city": "Paris"}]',
        [call("get_weather", '{"city": "Paris"}')],
    ),
    (
        "text-around",
        'Checking.\n\n[Called run with args: {"cmd": "ls"}]\n\nDone.',
        ["Checking.", call("run", '{"cmd": "ls"}'), "Done."],
    ),
    (
        "two-calls",
        '[Called run with args: {"a": 1}] [Called get_weather with args: {}]',
        [call("run", '{"a": 1}'), call("get_weather", "{}")],
    ),
    (
        "nested-braces",
        '[Called run with args: {"a": {"b": [1, {"c": 2}]}, "d": []}]',
        [call("run", '{"a": {"b": [1, {"c": 2}]}, "d": []}')],
    ),
    (
        "string-with-brackets",
        '[Called run with args: {"s": "] } [ {", "t": "x]"}]',
        [call("run", '{"s": "] } [ {", "t": "x]"}')],
    ),
    (
        "escaped-quote",
        r'[Called run with args: {"s": "say \"]\" \\", "u": "\u005d"}]',
        [call("run", r'{"s": "say \"]\" \\", "u": "\u005d"}')],
    ),
    (
        "case-and-spacing",
        '[called  run\nWITH  Args:{"a":1}  ]',
        [call("run", '{"a":1}')],
    ),
    (
        "kiro-name-maps-to-client",
        "[Called short_ab12 with args: {}]",
        [call("original.long.name", "{}")],
    ),
    (
        "client-name-with-dots",
        "[Called original.long.name with args: {}]",
        ["[Called original.long.name with args: {}]"],
    ),
    ("unknown-name", "[Called other with args: {}]", ["[Called other with args: {}]"]),
    ("markdown-link", "see [the docs](http://x) [1]", ["see [the docs](http://x) [1]"]),
    ("not-called", "[Call run with args: {}]", ["[Call run with args: {}]"]),
    ("no-space-after-called", "[Calledrun with args: {}]", ["[Calledrun with args: {}]"]),
    ("array-args", "[Called run with args: [1, 2]]", ["[Called run with args: [1, 2]]"]),
    ("invalid-json", "[Called run with args: {a: 1}]", ["[Called run with args: {a: 1}]"]),
    ("trailing-comma", '[Called run with args: {"a": 1,}]', ['[Called run with args: {"a": 1,}]']),
    (
        "no-closing-bracket",
        "[Called run with args: {} and more",
        ["[Called run with args: {} and more"],
    ),
    ("unfinished-at-end", '[Called run with args: {"a": ', ['[Called run with args: {"a": ']),
    ("unfinished-header-at-end", "text [Called ru", ["text [Called ru"]),
    ("trailing-space-kept", "Hello \n", ["Hello \n"]),
    (
        "failed-then-real",
        '[Called run with args: {x}] [Called run with args: {"ok": true}]',
        ["[Called run with args: {x}]", call("run", '{"ok": true}')],
    ),
    (
        "bracket-inside-failed-args",
        "[Called run with args: {x: [1]}]",
        ["[Called run with args: {x: [1]}]"],
    ),
    ("lone-bracket-at-end", "a [", ["a ["]),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_whole(text: str, expected: list[Piece]) -> None:
    assert merged(run([text])) == expected


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_split_anywhere_gives_the_same(text: str, expected: list[Piece]) -> None:
    for a, b in itertools.combinations(range(1, len(text)), 2):
        chunks = [text[:a], text[a:b], text[b:]]
        assert merged(run(chunks)) == expected, chunks


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_one_character_at_a_time(text: str, expected: list[Piece]) -> None:
    assert merged(run(list(text))) == expected


def test_without_names_nothing_is_held_or_changed() -> None:
    f = CalledTextFilter({})
    assert not f.active
    assert f.feed('[Called run with args: {"a": 1}]') == ['[Called run with args: {"a": 1}]']
    assert f.feed("x ") == ["x "]
    assert f.flush() == []


def test_text_before_a_candidate_goes_out_at_once() -> None:
    f = CalledTextFilter(NAMES)
    assert f.feed("Let me look. [Called run with") == ["Let me look."]
    assert f.feed(' args: {"a": "b"') == []
    assert f.feed("}] ok") == [TextCall("run", '{"a": "b"}'), "ok"]
    assert f.flush() == []


def test_a_too_long_candidate_is_released_as_text() -> None:
    text = '[Called run with args: {"a": "' + "x" * 100 + '"}]'
    assert merged(run([text[:60], text[60:]], max_held=50)) == [text]


def test_a_long_argument_streamed_in_many_pieces() -> None:
    body = '{"content": "' + "ab]}" * 5000 + '"}'
    text = f"[Called run with args: {body}]"
    chunks = [text[i : i + 7] for i in range(0, len(text), 7)]
    assert run(chunks) == [TextCall("run", body)]
