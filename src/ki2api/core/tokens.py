"""Token ESTIMATES of a request or a reply, for when Kiro reports no usage.

Texts are counted by `core.tokenizer` (Anthropic's legacy Claude BPE run by
`tiktoken` when installed, biased up; else per-script ratios) and scaled by
the model's vocabulary factor (Claude Opus 4.7 and later count ~1.32x more). Clients such as
Claude Code size their context compaction from the usage we report, so under-counting is the
harmful error and every figure here errs upward.

The script ratios of the fallback (chars/4 measured 0.88x of the real count for English prose,
0.82x for code, 0.67x for JSON and 0.48x for Chinese, docs/usage.md, Accuracy):

* ASCII: 1 token per 3.2 chars, ~10 % above prose.
* CJK ideographs, kana, hangul and full-width forms: 1 token per char.
* Any other non-ASCII (accents, Cyrillic, Greek, emoji...): 1 token per 2 chars.
* JSON text: an extra x1.25 on top (a real tokenizer counts JSON as it is).

`estimate_conversation_tokens` adds what the text alone misses: a fixed per-request overhead,
~4 tokens of framing per message, ~1,600 per image (Anthropic's rule of thumb is
width*height/750, about 1,600 for a 1,092x1,092 picture, which is the size images are scaled to)
and, when tools are offered, ~350 tokens of tool-use system prompt (Anthropic documents 346 for
`auto` tool choice on Claude 4 models) plus ~10 of framing per tool. Image data is never
tokenized; each text is tokenized once per request at most, and long texts seen in recent
requests (an agent's history) come from the counter's cache. The work is bounded: one request
tokenizes at most `REQUEST_TOKENIZE_CHARS` new characters (texts past that get the crude
bytes/3 bound), and a text over `MAX_EXACT_CHARS` is sampled (`core.tokenizer`).
"""

from __future__ import annotations

import json
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
from ki2api.core.tokenizer import (
    ASCII_CHARS_PER_TOKEN,
    REQUEST_TOKENIZE_CHARS,
    TokenCounter,
    TokenizeBudget,
    default_counter,
    vocabulary_factor,
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

REQUEST_OVERHEAD_TOKENS = 8
MESSAGE_OVERHEAD_TOKENS = 4
IMAGE_TOKENS = 1_600
TOOLS_SYSTEM_PROMPT_TOKENS = 350
TOOL_OVERHEAD_TOKENS = 10


def estimate_text_tokens(
    text: str, *, model_id: str | None = None, counter: TokenCounter | None = None
) -> int:
    """Tokens in `text`, biased up: 0 for "", else at least 1."""
    c = counter or default_counter()
    return c.count(text, factor=vocabulary_factor(model_id))


def estimate_json_tokens(
    value: Any, *, model_id: str | None = None, counter: TokenCounter | None = None
) -> int:
    """Tokens of a JSON value as the model sees it (compact JSON), biased up."""
    c = counter or default_counter()
    text = json.dumps(_plain(value), ensure_ascii=False, separators=(",", ":"), default=str)
    return c.count_json(text, factor=vocabulary_factor(model_id))


def _plain(value: Any) -> Any:
    """Mappings (possibly read-only) -> dicts, so json can dump them."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class _Estimate:
    """One conversation's estimate with one counter, one vocabulary factor and one budget."""

    def __init__(self, counter: TokenCounter, factor: float, budget: TokenizeBudget) -> None:
        self.counter = counter
        self.factor = factor
        self.budget = budget

    def text(self, text: str) -> int:
        return self.counter.count(text, factor=self.factor, budget=self.budget)

    def json(self, value: Any) -> int:
        text = json.dumps(_plain(value), ensure_ascii=False, separators=(",", ":"), default=str)
        return self.counter.count_json(text, factor=self.factor, budget=self.budget)

    def tool_spec(self, tool: ToolSpec) -> int:
        return (
            TOOL_OVERHEAD_TOKENS
            + self.text(tool.name)
            + self.text(tool.description)
            + self.json(tool.input_schema)
        )

    def part(self, part: object) -> int:
        if isinstance(part, TextPart | ThinkingPart):
            return self.text(part.text)
        if isinstance(part, ImagePart):
            return IMAGE_TOKENS
        if isinstance(part, ToolUsePart):
            return MESSAGE_OVERHEAD_TOKENS + self.text(part.name) + self.json(part.input)
        if isinstance(part, ToolResultPart):
            return MESSAGE_OVERHEAD_TOKENS + sum(self.part(p) for p in part.content)
        return 0

    def message(self, message: Message) -> int:
        return MESSAGE_OVERHEAD_TOKENS + sum(self.part(p) for p in message.parts)


def estimate_conversation_tokens(
    conv: Conversation,
    *,
    counter: TokenCounter | None = None,
    tokenize_chars: int | None = None,
) -> int:
    """Estimated input tokens of a whole request (system, messages, tools), biased up. At most
    `tokenize_chars` characters are tokenized (default `REQUEST_TOKENIZE_CHARS`; 0: none, the
    crude bound for all, except texts already in the cache)."""
    budget = TokenizeBudget(REQUEST_TOKENIZE_CHARS if tokenize_chars is None else tokenize_chars)
    est = _Estimate(counter or default_counter(), vocabulary_factor(conv.model_id), budget)
    total = REQUEST_OVERHEAD_TOKENS
    total += sum(est.text(s) for s in conv.system)
    total += sum(est.message(m) for m in conv.messages)
    if conv.tools:
        total += TOOLS_SYSTEM_PROMPT_TOKENS + sum(est.tool_spec(t) for t in conv.tools)
    return total
