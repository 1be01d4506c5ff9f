"""Splitting a leading `<thinking>...</thinking>` block off a text stream. Sans-I/O.

Kiro's models answer a thinking-mode prompt with `<thinking>…</thinking>` at the very start of
the text, then a blank line (docs/kiro-protocol.md §3.8). Tags may arrive split across events, so
the few characters that could begin a tag are held back until the next text arrives. Tags later
in the text are ordinary text.
"""

from __future__ import annotations

from ki2api.core.events import Event, TextDelta, ThinkingDelta

__all__ = ["ThinkingSplitter"]

_OPEN, _CLOSE, _BLANK = "<thinking>", "</thinking>", "\n\n"


def _held_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that could be the start of `tag`."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0


class ThinkingSplitter:
    """Splits a leading `<thinking>...</thinking>` off the text stream (tags may be split)."""

    def __init__(self, *, enabled: bool) -> None:
        self._mode = "detect" if enabled else "text"
        self._held = ""

    @property
    def passthrough(self) -> bool:
        """True once the text goes out as it comes (the leading block is over, or never was):
        `feed(text)` is then `[TextDelta(text)]` for any non-empty text."""
        return self._mode == "text"

    def feed(self, text: str) -> list[Event]:
        out: list[Event] = []
        buf, self._held = self._held + text, ""
        while buf:
            if self._mode == "text":
                out.append(TextDelta(buf))
                break
            if self._mode == "detect":
                buf = self._detect(buf)
            elif self._mode == "thinking":
                buf = self._thinking(buf, out)
            else:  # "after": one blank line after </thinking> is dropped
                buf = self._after(buf)
        return out

    def flush(self) -> list[Event]:
        """Release held-back characters; the leading thinking block (if any) is over."""
        held, self._held = self._held, ""
        mode, self._mode = self._mode, "text"
        if not held:
            return []
        return [ThinkingDelta(held)] if mode == "thinking" else [TextDelta(held)]

    def _detect(self, buf: str) -> str:
        stripped = buf.lstrip()
        if stripped.startswith(_OPEN):
            self._mode = "thinking"
            return stripped[len(_OPEN) :]
        if _OPEN.startswith(stripped):  # whitespace only, or a piece of the tag
            self._held = buf
            return ""
        self._mode = "text"
        return buf

    def _thinking(self, buf: str, out: list[Event]) -> str:
        end = buf.find(_CLOSE)
        if end >= 0:
            if end:
                out.append(ThinkingDelta(buf[:end]))
            self._mode = "after"
            return buf[end + len(_CLOSE) :]
        keep = _held_suffix(buf, _CLOSE)
        if len(buf) > keep:
            out.append(ThinkingDelta(buf[: len(buf) - keep]))
        self._held = buf[len(buf) - keep :]
        return ""

    def _after(self, buf: str) -> str:
        if buf.startswith(_BLANK):
            self._mode = "text"
            return buf[len(_BLANK) :]
        if _BLANK.startswith(buf):
            self._held = buf
            return ""
        self._mode = "text"
        return buf
