"""Token ESTIMATES for when Kiro reports no usage (no tokenizer, no I/O).

The numbers are ratios, chosen from the measurements in API_COMPAT.md section D (Claude's own
tokenizer as reference) and rounded the safe way: clients such as Claude Code size their context
compaction from the usage we report, so under-counting is the harmful error and we bias UP.

Per character class:

* ASCII: 1 token per 3.2 chars. chars/4 measured 0.88x of the real count for English prose
  (so the truth is about chars/3.5) and 0.82x for code (chars/3.3); 3.2 is ~10 % above prose.
* CJK ideographs, kana, hangul and full-width forms: 1 token per char. chars/4 measured 0.48x
  for Chinese mixed with markdown, i.e. well under one token per ideograph; one per char is
  the conservative end and what other Kiro proxies use.
* Any other non-ASCII (accents, Cyrillic, Greek, emoji...): 1 token per 2 chars.

JSON (tool schemas, tool inputs and results) tokenises worse than prose (chars/4 measured
0.67x), so JSON text gets an extra x1.25 on top of the ASCII ratio.

`estimate_conversation_tokens` adds what the text alone misses: a fixed per-request overhead,
~4 tokens of framing per message, ~1,600 per image (Anthropic's rule of thumb is
width*height/750, about 1,600 for a 1,092x1,092 picture, which is the size images are scaled to)
and, when tools are offered, ~350 tokens of tool-use system prompt (Anthropic documents 346 for
`auto` tool choice on Claude 4 models) plus ~10 of framing per tool.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ki2api.core.messages import (
    Conversation,
    ImagePart,
    Message,
    TextPart,
    ThinkingPart,
    ToolResultPart,
    ToolSpec,
    ToolUsePart,
)

__all__ = [
    "ASCII_CHARS_PER_TOKEN",
    "IMAGE_TOKENS",
    "MESSAGE_OVERHEAD_TOKENS",
    "REQUEST_OVERHEAD_TOKENS",
    "TOOL_OVERHEAD_TOKENS",
    "TOOLS_SYSTEM_PROMPT_TOKENS",
    "estimate_conversation_tokens",
    "estimate_json_tokens",
    "estimate_text_tokens",
]

ASCII_CHARS_PER_TOKEN = 3.2
OTHER_CHARS_PER_TOKEN = 2.0
JSON_FACTOR = 1.25
REQUEST_OVERHEAD_TOKENS = 8
MESSAGE_OVERHEAD_TOKENS = 4
IMAGE_TOKENS = 1_600
TOOLS_SYSTEM_PROMPT_TOKENS = 350
TOOL_OVERHEAD_TOKENS = 10

# Inclusive code point ranges counted as one token per character.
_WIDE_RANGES: tuple[tuple[int, int], ...] = (
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x2E80, 0x2FDF),  # CJK radicals, Kangxi radicals
    (0x3000, 0x30FF),  # CJK symbols and punctuation, hiragana, katakana
    (0x3100, 0x31FF),  # Bopomofo, Hangul compatibility Jamo, katakana extensions
    (0x3200, 0x4DBF),  # enclosed CJK, compatibility, CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA960, 0xA97F),  # Hangul Jamo extended A
    (0xAC00, 0xD7FF),  # Hangul syllables, Jamo extended B
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFE30, 0xFE4F),  # CJK compatibility forms
    (0xFF00, 0xFFEF),  # half-width and full-width forms
    (0x20000, 0x3FFFF),  # CJK extensions B..H (planes 2 and 3)
)


def _is_wide(code: int) -> bool:
    return any(lo <= code <= hi for lo, hi in _WIDE_RANGES)


def estimate_text_tokens(text: str) -> int:
    """Script-aware estimate of the tokens in `text`: 0 for "", else at least 1."""
    if not text:
        return 0
    ascii_chars = wide = other = 0
    for ch in text:
        code = ord(ch)
        if code < 0x80:
            ascii_chars += 1
        elif code >= 0x1100 and _is_wide(code):
            wide += 1
        else:
            other += 1
    total = ascii_chars / ASCII_CHARS_PER_TOKEN + other / OTHER_CHARS_PER_TOKEN + wide
    return max(1, math.ceil(total))


def estimate_json_tokens(value: Any) -> int:
    """Estimate for a JSON value as the model sees it (compact JSON, x1.25)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return math.ceil(estimate_text_tokens(text) * JSON_FACTOR)


def _tool_spec_tokens(tool: ToolSpec) -> int:
    return (
        TOOL_OVERHEAD_TOKENS
        + estimate_text_tokens(tool.name)
        + estimate_text_tokens(tool.description)
        + estimate_json_tokens(_plain(tool.input_schema))
    )


def _plain(value: Any) -> Any:
    """Mappings (possibly read-only) -> dicts, so json can dump them."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _part_tokens(part: object) -> int:
    if isinstance(part, TextPart | ThinkingPart):
        return estimate_text_tokens(part.text)
    if isinstance(part, ImagePart):
        return IMAGE_TOKENS
    if isinstance(part, ToolUsePart):
        return (
            MESSAGE_OVERHEAD_TOKENS
            + estimate_text_tokens(part.name)
            + estimate_json_tokens(_plain(part.input))
        )
    if isinstance(part, ToolResultPart):
        return MESSAGE_OVERHEAD_TOKENS + sum(_part_tokens(p) for p in part.content)
    return 0


def _message_tokens(message: Message) -> int:
    return MESSAGE_OVERHEAD_TOKENS + sum(_part_tokens(p) for p in message.parts)


def estimate_conversation_tokens(conv: Conversation) -> int:
    """Estimated input tokens of a whole request (system, messages, tools), biased up."""
    total = REQUEST_OVERHEAD_TOKENS
    total += sum(estimate_text_tokens(s) for s in conv.system)
    total += sum(_message_tokens(m) for m in conv.messages)
    if conv.tools:
        total += TOOLS_SYSTEM_PROMPT_TOKENS + sum(_tool_spec_tokens(t) for t in conv.tools)
    return total
