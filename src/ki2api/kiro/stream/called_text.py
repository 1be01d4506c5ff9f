"""Recognising `[Called NAME with args: {...}]` in streamed text. Sans-I/O.

When a conversation's earlier tool calls reached the model as text (other clients and proxies,
the original ki2api among them, flatten them so: docs/kiro-protocol.md §3.10, §5.7), the model may
answer with the same text instead of a real tool use. `CalledTextFilter` turns such text into
`TextCall`s and lets everything else through unchanged:

* Only text from a `[` that may begin `[Called` up to its decision is held back; text before it
  goes out at once. The form is `[Called`, whitespace, NAME, whitespace, `with`, whitespace,
  `args:`, optional whitespace, one JSON object, optional whitespace, `]`. The keywords match
  in any case. The object's end is found by bracket matching that knows JSON strings and
  escapes, so a `]` or `}` inside a string does not end it.
* NAME must be one of the names given (the tools offered this turn, in their client or Kiro
  spelling); the filter reports the client name. With no names the filter is a no-op: a call of
  a tool the client did not offer (or asked not to be used) is not made up from text.
* The arguments must parse as a JSON object; otherwise (and when the held text would exceed
  `max_held` characters, or the stream ends first) the held text is released as plain text.
  No repair is attempted: a half-guessed call is worse than visible text.
* Whitespace right before and right after a recognised call is dropped, so that a reply made of
  calls only has no stray text. To allow that, trailing whitespace of a piece of text is held
  until more text (or the end) arrives.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_HELD", "CalledTextFilter", "Piece", "TextCall"]

DEFAULT_MAX_HELD = 1_000_000
_MAX_NAME = 256
_NEED = "need"  # the held text may still become a call
_NO = "no"  # it cannot


@dataclass(frozen=True, slots=True)
class TextCall:
    name: str  # the client's name of the tool
    arguments: str  # the JSON object, exactly as written


Piece = str | TextCall


@dataclass(slots=True)
class _Brackets:
    """Resumable scan for the end of one JSON object or array (string and escape aware)."""

    start: int  # where the value begins (a `{`)
    pos: int = 0  # next character to look at, relative to `start`
    depth: int = 0
    in_string: bool = False
    escaped: bool = False

    def end(self, s: str) -> int | None:
        """The index just after the value, or None when `s` does not hold all of it yet."""
        i = self.start + self.pos
        if self.pos and self.depth == 0:  # found by an earlier call
            return i
        while i < len(s):
            c = s[i]
            i += 1
            if self.in_string:
                self._string_char(c)
            elif c == '"':
                self.in_string = True
            elif c in "{[":
                self.depth += 1
            elif c in "}]":
                self.depth -= 1
                if self.depth == 0:
                    self.pos = i - self.start
                    return i
        self.pos = i - self.start
        return None

    def _string_char(self, c: str) -> None:
        if self.escaped:
            self.escaped = False
        elif c == "\\":
            self.escaped = True
        elif c == '"':
            self.in_string = False


def _literal(s: str, pos: int, word: str) -> int | str:
    """`word` (any case) at `pos`: the position after it, or _NEED / _NO."""
    have = s[pos : pos + len(word)].lower()
    if not word.startswith(have):
        return _NO
    return pos + len(word) if len(have) == len(word) else _NEED


def _spaces(s: str, pos: int, *, required: bool) -> int | str:
    end = pos
    while end < len(s) and s[end].isspace():
        end += 1
    if end == len(s):
        return _NEED
    return _NO if required and end == pos else end


def _header(s: str, names: Mapping[str, str]) -> tuple[int, str] | str:
    """Parse `[Called NAME with args:` + spaces: (where the JSON starts, client name)."""
    steps: list[tuple[str, str | None]] = [
        ("lit", "[called"),
        ("ws", None),
        ("name", None),
        ("ws", None),
        ("lit", "with"),
        ("ws", None),
        ("lit", "args:"),
        ("ws?", None),
    ]
    pos, name = 0, ""
    for kind, word in steps:
        if kind == "lit":
            got = _literal(s, pos, word or "")
        elif kind == "name":
            end = pos
            while end < len(s) and not s[end].isspace() and s[end] not in "[]{}":
                end += 1
            if end == len(s) and end - pos <= _MAX_NAME:
                return _NEED
            name = s[pos:end]
            got = end if name in names else _NO
        else:
            got = _spaces(s, pos, required=kind == "ws")
        if isinstance(got, str):
            return got
        pos = got
    return (pos, names[name]) if s[pos] == "{" else _NO


class CalledTextFilter:
    """Feed text pieces in order, then `flush()` once at the end (or before other content)."""

    def __init__(self, names: Mapping[str, str], *, max_held: int = DEFAULT_MAX_HELD) -> None:
        self._names = dict(names)
        self._max_held = max_held
        self._held = ""  # trailing whitespace, then possibly a candidate starting at "["
        self._scan: _Brackets | None = None  # the candidate's JSON scan, once its header parsed
        self._after_call = False
        self._name = ""  # the candidate's client name, once its header parsed

    @property
    def active(self) -> bool:
        return bool(self._names)

    def feed(self, text: str) -> list[Piece]:
        if not self._names:
            return [text] if text else []
        out: list[Piece] = []
        buf, self._held = self._held + text, ""
        if self._after_call:
            buf = buf.lstrip()
            self._after_call = not buf
        while buf:
            buf = self._step(buf, out)
        return out

    def flush(self) -> list[Piece]:
        """Release whatever is held as text (an unfinished call is text)."""
        held, self._held, self._scan = self._held, "", None
        if self._after_call:
            held, self._after_call = held.lstrip(), False
        return [held] if held else []

    def _step(self, buf: str, out: list[Piece]) -> str:
        """Handle `buf` up to its next decision; return what is left to look at."""
        i = buf.find("[")
        if i < 0:
            self._emit(buf, out)
            return ""
        found = self._match(buf[i:])
        if found == _NEED:
            self._emit(buf[:i], out)
            self._held += buf[i:]
            return ""
        if isinstance(found, str):  # _NO: the "[" is text
            self._scan = None
            _add(out, buf[: i + 1])
            return buf[i + 1 :]
        end, call = found
        self._scan = None
        _add(out, buf[:i].rstrip())
        out.append(call)
        rest = buf[i + end :].lstrip()
        self._after_call = not rest
        return rest

    def _emit(self, text: str, out: list[Piece]) -> None:
        """Text goes out, except its trailing whitespace, held in case a call follows."""
        body = text.rstrip()
        _add(out, body)
        self._held += text[len(body) :]

    def _match(self, s: str) -> tuple[int, TextCall] | str:
        if len(s) > self._max_held:
            return _NO
        if self._scan is None:
            header = _header(s, self._names)
            if isinstance(header, str):
                return header
            start, name = header
            self._scan = _Brackets(start)
            self._name = name
        end = self._scan.end(s)
        if end is None:
            return _NEED
        try:
            args = json.loads(s[self._scan.start : end])
        except ValueError:
            return _NO
        close = _spaces(s, end, required=False)
        if close == _NEED:
            return _NEED
        if not isinstance(args, dict) or isinstance(close, str) or s[close] != "]":
            return _NO
        return close + 1, TextCall(self._name, s[self._scan.start : end])


def _add(out: list[Piece], text: str) -> None:
    """Append text, joined to the text piece before it if any."""
    if not text:
        return
    if out and isinstance(out[-1], str):
        out[-1] += text
    else:
        out.append(text)
