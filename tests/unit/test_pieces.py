"""core/pieces.py: streamed text kept in few strings, in order."""

from __future__ import annotations

from ki2api.core.pieces import Pieces


def test_compacting_keeps_the_text_and_bounds_the_strings() -> None:
    pieces = Pieces()
    add = pieces.append  # bound once, as the encoders do: still this list after compacting
    words = [f"w{i} " for i in range(20_000)]
    for i, word in enumerate(words):
        add(word)
        if i % 3 == 0:  # once per read of a few events
            pieces.compact()
        assert len(pieces) <= i // 512 + 64 + 8 + 3
    assert "".join(pieces) == "".join(words)


def test_few_pieces_are_left_apart_and_a_start_piece_counts() -> None:
    pieces = Pieces("start ")
    pieces += ["a", "b"]
    pieces.compact()
    assert pieces == ["start ", "a", "b"]
    pieces.extend("cdefg")
    pieces.compact()
    assert pieces == ["start abcdefg"]
