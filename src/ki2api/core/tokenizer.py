"""Counting the tokens of a text: a real tokenizer when its package is installed, else ratios.

Used only when Kiro reports no usage of its own (see docs/usage.md for the order of sources).

* `ClaudeLegacyTokenizer`: the 65,000-piece BPE vocabulary Anthropic shipped for its older
  models (the `tokenizer.json` of the `anthropic` SDK < 0.39, MIT), run by OpenAI's `tiktoken`
  (MIT, Rust wheels for Linux, macOS and Windows, no network at run time). That tokenizer is
  NFKC, GPT-2's byte-level split and a BPE whose merge order is its tokens' id order, so
  tiktoken with rank = id gives its tokens exactly: `claude_legacy.tiktoken` is the vocabulary
  in tiktoken's format (made by `scripts/claude_vocab.py`), and a fixture test checks the
  counts against a separate implementation (the `anthropic-tokenizer` package) on 556 texts.
  It is the closest to Claude of what installs offline: against a reconstruction of the
  tokenizer of Claude 3 to Claude 4.6 it counts 0.86x (code), 0.95x (English), 0.91x (JSON)
  and 0.93x (Chinese) of the real figure (docs/usage.md, Accuracy), so its counts are
  multiplied by `LEGACY_BIAS` = 1.17 (1 / 0.86, rounded up): never under the truth on those
  samples, at most ~10 % over for prose.
* `ScriptEstimator` is the fallback when tiktoken is missing: per-script ratios of
  characters to tokens, themselves biased up (see `tokens.py` for the ratios).
* Claude Opus 4.7 and later models use a newer vocabulary that yields 1.15x-1.32x more tokens
  for the same text; `vocabulary_factor(model_id)` returns the 1.32 to apply for them.

`TokenCounter` adds a bounded cache (agents resend the same history every turn, so only the
new messages are tokenized) and the bias. `default_counter()` builds one lazily, on first use:
importing this module does no I/O and loads no vocabulary.

Bounded work. The BPE takes ~0.07 us per character of English and ~0.14 of Chinese (3.5x
faster than the `anthropic-tokenizer` package this replaced, issue 17), so a 15 MB text would
still stall every other request for a second or more. Counting is therefore bounded
(docs/usage.md, "Bounded counting"):

* a text longer than `MAX_EXACT_CHARS` is never tokenized whole: `SAMPLE_SLICES` evenly spaced
  slices of `SAMPLE_SLICE_CHARS` are, and their count is scaled to the whole length (+5 %);
* a `TokenizeBudget` (one per request) caps the characters tokenized for one request; once it
  is spent, texts get the crude bound of one token per `BYTES_PER_TOKEN` UTF-8 bytes (over the
  script ratios for every script, so still an over-count) instead. Cached counts cost nothing.
"""

from __future__ import annotations

import binascii
import functools
import math
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from importlib import resources
from typing import Protocol

__all__ = [
    "ASCII_CHARS_PER_TOKEN",
    "BYTES_PER_TOKEN",
    "LEGACY_BIAS",
    "MAX_EXACT_CHARS",
    "NEW_VOCABULARY_FACTOR",
    "OTHER_CHARS_PER_TOKEN",
    "REQUEST_TOKENIZE_CHARS",
    "SAMPLE_SLICES",
    "SAMPLE_SLICE_CHARS",
    "SCRIPT_JSON_FACTOR",
    "ClaudeLegacyTokenizer",
    "ScriptEstimator",
    "TokenCounter",
    "TokenizeBudget",
    "Tokenizer",
    "crude_count",
    "default_counter",
    "load_tokenizer",
    "vocabulary_factor",
]

LEGACY_BIAS = 1.17
NEW_VOCABULARY_FACTOR = 1.32
ASCII_CHARS_PER_TOKEN = 3.2
OTHER_CHARS_PER_TOKEN = 2.0
SCRIPT_JSON_FACTOR = 1.25
# Bounded counting (see the module docstring). ~0.07 to 0.14 us per character for the BPE: a
# 32 K text costs ~2 to 5 ms, a request's 96 K ~15 ms at most; a sample 8 x 2 K = 16 K characters.
MAX_EXACT_CHARS = 32_768
REQUEST_TOKENIZE_CHARS = 98_304
SAMPLE_SLICES = 8
SAMPLE_SLICE_CHARS = 2_048
SAMPLE_MARGIN = 1.05
# The crude bound: ASCII 3 bytes/token (script ratio 3.2 chars), CJK 3 bytes (ratio: 1 per
# char), other 2-byte letters 1.5 tokens per 2 chars (ratio: 1), emoji 4 bytes 1.33 (ratio 0.5).
BYTES_PER_TOKEN = 3.0

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
    """Anthropic's legacy Claude BPE run by tiktoken (see the module docstring), raw counts (no
    bias)."""

    name = "claude-legacy-bpe"
    json_factor = 1.0
    VOCABULARY = "claude_legacy.tiktoken"  # beside this module
    # GPT-2's pre-tokenizer (the tokenizer.json's ByteLevel split) and its added tokens, which
    # are matched in the text as they are (before NFKC, never split)
    PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    SPECIALS = {"<EOT>": 0, "<META>": 1, "<META_START>": 2, "<META_END>": 3, "<SOS>": 4}

    def __init__(self, encode: Callable[[str], list[int]]) -> None:
        self._encode = encode

    @classmethod
    def load(cls) -> ClaudeLegacyTokenizer | None:
        """The tokenizer, or None when tiktoken is not installed (or does not load)."""
        try:
            import tiktoken
        except ImportError:
            return None
        lines = (resources.files("ki2api.core") / cls.VOCABULARY).read_bytes().splitlines()
        pairs = (line.split() for line in lines)  # the token's bytes in base64, its rank
        ranks = {binascii.a2b_base64(token): int(rank) for token, rank in pairs}
        encoding = tiktoken.Encoding(
            cls.name, pat_str=cls.PATTERN, mergeable_ranks=ranks, special_tokens=cls.SPECIALS
        )
        return cls(functools.partial(encoding.encode, allowed_special="all"))

    def count(self, text: str) -> int:
        if not text:
            return 0
        if not unicodedata.is_normalized("NFKC", text):  # (2 us per 2 K characters)
            text = unicodedata.normalize("NFKC", text)
        return len(self._encode(text))


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


class TokenizeBudget:
    """How many more characters one request may have tokenized (see the module docstring)."""

    def __init__(self, chars: int = REQUEST_TOKENIZE_CHARS) -> None:
        self.left = chars

    def take(self, chars: int) -> bool:
        """Spend `chars` if that many are left."""
        if chars > self.left:
            return False
        self.left -= chars
        return True


def crude_count(text: str) -> float:
    """One token per `BYTES_PER_TOKEN` UTF-8 bytes: linear, C-speed, over the script ratios."""
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return size / BYTES_PER_TOKEN


class TokenCounter:
    """A tokenizer with its upward bias and a bounded LRU cache of counts of long texts.

    The cache key is (length, hash) of the text, so no text is kept alive by the cache; a hash
    collision could only make one usage estimate wrong. Safe to share between threads. Texts
    over `max_exact_chars` are sampled, never tokenized whole (see the module docstring).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        max_entries: int = 4096,
        min_cached_chars: int = 256,
        max_exact_chars: int = MAX_EXACT_CHARS,
    ) -> None:
        self.tokenizer = tokenizer
        self.bias = LEGACY_BIAS if isinstance(tokenizer, ClaudeLegacyTokenizer) else 1.0
        self.max_exact_chars = max_exact_chars
        self._max_entries = max_entries
        self._min_cached = min_cached_chars
        self._cache: OrderedDict[tuple[int, int], int] = OrderedDict()
        self._lock = threading.Lock()
        self.tokenized_chars = 0  # characters actually tokenized (not served from the cache)

    def cached(self, text: str) -> int | None:
        """The tokenizer's count of `text` if it is in the cache."""
        if len(text) < self._min_cached or len(text) > self.max_exact_chars:
            return None
        key = (len(text), hash(text))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
            return hit

    def raw(self, text: str) -> int:
        """The tokenizer's own count, from the cache when the text was seen recently (a text
        over `max_exact_chars`: the sampled estimate)."""
        if len(text) > self.max_exact_chars:
            return math.ceil(self._sampled(text))
        if len(text) < self._min_cached:
            return self.tokenizer.count(text)
        hit = self.cached(text)
        if hit is not None:
            return hit
        value = self.tokenizer.count(text)
        with self._lock:
            self.tokenized_chars += len(text)
            self._cache[(len(text), hash(text))] = value
            if len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return value

    def _sampled(self, text: str) -> float:
        """The count of `SAMPLE_SLICES` evenly spaced slices, scaled to the whole text."""
        n, width = len(text), SAMPLE_SLICE_CHARS
        step = (n - width) / (SAMPLE_SLICES - 1)
        starts = [round(i * step) for i in range(SAMPLE_SLICES)]
        counted = sum(self.tokenizer.count(text[s : s + width]) for s in starts)
        with self._lock:
            self.tokenized_chars += SAMPLE_SLICES * width
        return counted * n / (SAMPLE_SLICES * width) * SAMPLE_MARGIN

    def _bounded_raw(self, text: str, budget: TokenizeBudget | None, json: bool) -> float:
        if budget is None:
            return self.raw(text)
        hit = self.cached(text)
        if hit is not None:
            return hit
        cost = (
            len(text) if len(text) <= self.max_exact_chars else SAMPLE_SLICES * SAMPLE_SLICE_CHARS
        )
        if budget.take(cost):
            return self.raw(text)
        if json:  # what count_json multiplies by, undone: the result is the crude bound x1.25
            return crude_count(text) * SCRIPT_JSON_FACTOR / (self.bias * self.tokenizer.json_factor)
        return crude_count(text) / self.bias

    def count(self, text: str, *, factor: float = 1.0, budget: TokenizeBudget | None = None) -> int:
        """Biased count of `text`: 0 for "", else at least 1. `factor` scales it further;
        `budget` bounds the characters tokenized (past it: the crude bound)."""
        if not text:
            return 0
        return max(1, math.ceil(self._bounded_raw(text, budget, False) * self.bias * factor))

    def count_json(
        self, text: str, *, factor: float = 1.0, budget: TokenizeBudget | None = None
    ) -> int:
        """Biased count of serialised JSON (the script estimator needs its JSON factor)."""
        if not text:
            return 0
        jf = self.tokenizer.json_factor
        raw = self._bounded_raw(text, budget, True)
        return max(1, math.ceil(raw * self.bias * factor * jf))


@functools.cache
def default_counter() -> TokenCounter:
    """The process-wide counter, built on first use (loads the vocabulary: ~0.1 s, ~20 MB)."""
    return TokenCounter(load_tokenizer())
