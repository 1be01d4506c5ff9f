"""Streamed text kept for the end of the answer, in few strings.

An answer's text arrives in small fragments (a word or two each), and the parts that estimate
or count its tokens at the end (the Kiro translator, the encoders' usage tallies, the max_tokens
limiter) keep it for the whole stream. A str costs about 50 B besides its text, so one string
per fragment made a long answer's held stream grow by 50 B or more per event. `Pieces` is a
list of strings whose newest pieces are joined 8 at a time (`compact`, called once per upstream
read by its owner), and those joins 64 at a time: the same text in order, in about one string
per 512 fragments, each character copied twice.
"""

from __future__ import annotations

__all__ = ["Pieces"]

_JOIN_EVERY = 8  # new pieces kept apart before they are joined into one
_MAX_JOINS = 64  # joins kept apart before they are joined into one (never joined again)


class Pieces(list[str]):
    """A list of text pieces (append as to any list: `"".join(pieces)` is the text)."""

    __slots__ = ("_big", "_joined")

    def __init__(self, *pieces: str) -> None:
        super().__init__(pieces)
        self._big = 0  # the pieces at the front that are joins of joins
        self._joined = 0  # ... and with the joins of pieces after them

    def compact(self) -> None:
        joined = self._joined
        if len(self) - joined < _JOIN_EVERY:
            return
        self[joined:] = ["".join(self[joined:])]
        joined += 1
        big = self._big
        if joined - big >= _MAX_JOINS:
            self[big:] = ["".join(self[big:])]
            self._big = joined = big + 1
        self._joined = joined
