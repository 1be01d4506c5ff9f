"""Keep a request within the size Kiro accepts, before it is sent. Pure.

Kiro answers a body over ~615,000 bytes with a misleading 400 "Improperly formed request." and a
current message over 600,000 characters with CONTENT_LENGTH_EXCEEDS_THRESHOLD (docs/kiro-protocol.md
§3.9, §6.2). Image bytes do not count against that limit: a real 883,531-byte
request holding an 841 KB base64 PNG was accepted (§3.9), so the size measured
is the body without its images' base64 (`text_bytes`), and images have a cap of their own
(`DEFAULT_MAX_IMAGE_BYTES`, `check_image_bytes`). Tools too: Kiro answers "Improperly formed
request." to more than about 120 (`DEFAULT_MAX_TOOLS`, `check_tools`).

We check first, with the real serialised size (`measure`, injected: the backend passes
`text_bytes(build_request(conv, ...).body)`), against a limit with a safe margin
(`DEFAULT_MAX_UPSTREAM_BYTES`), and then either

* refuse with OpenAI's 400 `context_length_exceeded` (the default), or
* when trimming is on, drop the OLDEST history messages until the body fits.

What trimming never does:

* drop the current user message (the trailing run of user messages, and an assistant prefill
  after it) or the system texts or the tools;
* cut between a tool call and its result: a cut is only made where a user turn starts after
  an assistant turn, and never where a kept tool result answers a dropped tool call (so no
  kept call loses its result either: results come after their calls);
* serialise the conversation once per candidate: the first cut is guessed from per-message
  size estimates scaled to the measured body, then found exactly by a galloping binary search,
  so a 2,000-turn history costs a handful of `measure` calls.

When even the smallest conversation that may be sent is too big, the error is raised anyway.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from itertools import accumulate
from typing import Any

import orjson

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.messages import (
    Conversation,
    ImagePart,
    Message,
    Part,
    TextPart,
    ThinkingPart,
    ToolResultPart,
    ToolUsePart,
)

__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_MAX_TOOLS",
    "DEFAULT_MAX_UPSTREAM_BYTES",
    "MAX_CURRENT_MESSAGE_CHARS",
    "body_image_bytes",
    "check_budget",
    "check_current_message",
    "check_image_bytes",
    "check_tools",
    "conversation_image_bytes",
    "current_message_chars",
    "cut_points",
    "fit_conversation",
    "protected_start",
    "text_bytes",
]

DEFAULT_MAX_UPSTREAM_BYTES = 600_000  # Kiro refuses ~615,000; the rest is margin
MAX_CURRENT_MESSAGE_CHARS = 600_000  # Kiro's CONTENT_LENGTH_EXCEEDS_THRESHOLD
# Images of one request, base64 as sent: one image at Bedrock's 3.75 MB cap (Kiro answers image
# errors as "Bedrock error message: ..."), which is also Anthropic's 5 MB per-image cap. The
# largest image seen accepted by real Kiro is 841 KB of base64 (docs/kiro-protocol.md §3.9).
DEFAULT_MAX_IMAGE_BYTES = 5 * 1024 * 1024
# Kiro refuses more than about 120 tools with "Improperly formed request." (docs/kiro-protocol.md
# §3.6: 137 failed, "bring your total tool count below 120" fixed it: decolua/9router #1184,
# #1242), so 119 is the most that is known to pass.
DEFAULT_MAX_TOOLS = 119
_MESSAGE_OVERHEAD_BYTES = 120  # keys, modelId, origin... of one history entry (a rough guess)
_CODE = "context_length_exceeded"


def _too_long(what: str, size: int, limit: int, unit: str, hint: str = "") -> GatewayError:
    message = (
        f"This model's maximum context length is {limit:,} {unit} ({what}), however your "
        f"messages resulted in {size:,} {unit}. Please reduce the length of the messages.{hint}"
    )
    return GatewayError(ErrorKind.CONTEXT_TOO_LONG, message, param="messages", code=_CODE)


def check_budget(
    body_bytes: int, *, max_body_bytes: int = DEFAULT_MAX_UPSTREAM_BYTES, trimmed: bool = False
) -> None:
    """Raise CONTEXT_TOO_LONG when a body of `body_bytes` would be over the limit."""
    if body_bytes > max_body_bytes:
        what = "request size upstream" + (", with the oldest history dropped" if trimmed else "")
        raise _too_long(what, body_bytes, max_body_bytes, "bytes")


def body_image_bytes(body: Mapping[str, Any]) -> int:
    """Characters of image base64 in a Kiro request body (current message and history)."""
    state = body.get("conversationState") or {}
    current = (state.get("currentMessage") or {}).get("userInputMessage") or {}
    entries = [current]
    entries += [(h.get("userInputMessage") or {}) for h in state.get("history") or ()]
    return sum(
        len(image["source"]["bytes"]) for entry in entries for image in entry.get("images") or ()
    )


def text_bytes(body: Mapping[str, Any]) -> int:
    """The serialised size of a Kiro body not counting its images' base64 (which serialises
    one byte per character: base64 needs no JSON escape)."""
    return len(orjson.dumps(body)) - body_image_bytes(body)


def conversation_image_bytes(conv: Conversation) -> int:
    """Characters of base64 of the images that go upstream as images (user messages)."""
    total = 0
    for message in conv.messages:
        if message.role != "user":
            continue
        for part in message.parts:
            if isinstance(part, ImagePart):
                total += len(part.data_b64)
            elif isinstance(part, ToolResultPart):
                total += sum(len(p.data_b64) for p in part.content if isinstance(p, ImagePart))
    return total


def check_image_bytes(conv: Conversation, *, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> None:
    """Raise INVALID_REQUEST (400) when the images sent upstream are over `max_bytes` base64."""
    size = conversation_image_bytes(conv)
    if size > max_bytes:
        raise GatewayError(
            ErrorKind.INVALID_REQUEST,
            f"The images of this request are too large: {size:,} bytes (base64); at most "
            f"{max_bytes:,} bytes of images can be sent in one request "
            "(KI2API_MAX_IMAGE_BYTES_PER_REQUEST). Send fewer or smaller images.",
            param="messages",
            code="images_too_large",
        )


def check_tools(conv: Conversation, *, max_tools: int = DEFAULT_MAX_TOOLS) -> None:
    """Raise INVALID_REQUEST (400) when the request offers more tools than Kiro takes."""
    count = len(conv.tools)
    if count > max_tools:
        raise GatewayError(
            ErrorKind.INVALID_REQUEST,
            f"Too many tools: the request offers {count}; Kiro takes at most {max_tools} "
            "tools in one request (KI2API_MAX_TOOLS). Offer fewer tools (disable some MCP "
            "servers).",
            param="tools",
            code="too_many_tools",
        )


def protected_start(messages: Sequence[Message]) -> int:
    """Index where the part that is always sent begins: the trailing user run (the current
    message) and any assistant prefill after it."""
    i = len(messages)
    while i > 0 and messages[i - 1].role == "assistant":
        i -= 1
    while i > 0 and messages[i - 1].role == "user":
        i -= 1
    return i


def _part_text_chars(part: Part) -> int:
    if isinstance(part, TextPart | ThinkingPart):
        return len(part.text)
    if isinstance(part, ToolResultPart):
        return sum(len(p.text) + 1 for p in part.content if isinstance(p, TextPart)) + 64
    if isinstance(part, ToolUsePart):
        return len(json.dumps(part.input, default=str)) + len(part.name) + 64
    return 0


def current_message_chars(conv: Conversation) -> int:
    """An upper bound of the characters of the current message's `content` as Kiro gets it."""
    messages = conv.messages
    if messages and messages[-1].role == "assistant":
        return 0  # a prefill: the current message becomes a short placeholder
    start = protected_start(messages)
    sizes = [_part_text_chars(p) for m in messages[start:] for p in m.parts]
    chars = sum(sizes) + max(0, len(sizes) - 1)  # parts are joined with "\n"
    system = [s for s in conv.system if s]
    if start == 0 and system:  # no history: "{system}\n\n{text}" (system joined by "\n\n")
        chars += sum(len(s) + 2 for s in system)
    return chars


def check_current_message(
    conv: Conversation, *, max_chars: int = MAX_CURRENT_MESSAGE_CHARS
) -> None:
    """Raise CONTEXT_TOO_LONG when the current message alone is over Kiro's character limit."""
    chars = current_message_chars(conv)
    if chars > max_chars:
        raise _too_long("characters in the latest message", chars, max_chars, "characters")


def _forbidden(messages: Sequence[Message]) -> list[bool]:
    """forbidden[k]: cutting before message k would separate a kept result from its call."""
    used_at: dict[str, int] = {}
    depth = [0] * (len(messages) + 2)
    for index, message in enumerate(messages):
        for part in message.parts:
            if message.role == "assistant" and isinstance(part, ToolUsePart):
                used_at.setdefault(part.id, index)
            elif message.role == "user" and isinstance(part, ToolResultPart):
                use = used_at.get(part.tool_use_id)
                if use is not None:  # any cut in (use, index] would orphan this result
                    depth[use + 1] += 1
                    depth[index + 1] -= 1
    return [d > 0 for d in accumulate(depth)][: len(messages) + 1]


def cut_points(messages: Sequence[Message]) -> list[int]:
    """Ascending k > 0 where `messages[k:]` may be sent: k starts a user turn after an
    assistant turn, is not past the protected tail, and splits no tool call from its result."""
    end = protected_start(messages)
    forbidden = _forbidden(messages)
    return [
        k
        for k in range(1, end + 1)
        if messages[k].role == "user" and messages[k - 1].role == "assistant" and not forbidden[k]
    ]


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def _part_bytes(part: Part) -> int:
    if isinstance(part, TextPart | ThinkingPart):
        return _utf8_len(part.text)
    if isinstance(part, ImagePart):
        return len(part.data_b64) + 48
    if isinstance(part, ToolResultPart):
        return sum(_part_bytes(p) for p in part.content) + 80
    if isinstance(part, ToolUsePart):
        return _utf8_len(json.dumps(part.input, ensure_ascii=False, default=str)) + 80
    return 0


def _message_bytes(message: Message) -> int:
    return _MESSAGE_OVERHEAD_BYTES + sum(_part_bytes(p) for p in message.parts)


def _search(est: list[int], full: int, limit: int, size_at: Callable[[int], int]) -> int:
    """The smallest j with size_at(j) <= limit, given that the last j fits and that dropping
    nothing (j = -1) measures `full`. `est[j]`: estimated bytes dropped by cut j (ascending).

    Interpolates between the nearest sizes known on each side (the size is close to linear in
    what is dropped), with a bisection step whenever that did not halve the bracket: a few
    measures in practice, at most ~2 log2(len(est)).
    """
    lo, hi = -1, len(est) - 1
    f_lo, f_hi = full, size_at(hi)
    e_lo, e_hi = 0, est[hi]
    bisect_next = False
    while hi - lo > 1:
        if bisect_next or f_lo <= f_hi:
            j = (lo + hi) // 2
        else:
            target = e_lo + (f_lo - limit) * (e_hi - e_lo) / (f_lo - f_hi)
            j = min(max(bisect.bisect_left(est, target), lo + 1), hi - 1)
        width = hi - lo
        size = size_at(j)
        if size <= limit:
            hi, f_hi, e_hi = j, size, est[j]
        else:
            lo, f_lo, e_lo = j, size, est[j]
        bisect_next = not bisect_next and (hi - lo) * 2 > width
    return hi


def fit_conversation(
    conv: Conversation,
    *,
    max_body_bytes: int = DEFAULT_MAX_UPSTREAM_BYTES,
    trim: bool = False,
    measure: Callable[[Conversation], int],
    max_tools: int = DEFAULT_MAX_TOOLS,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> Conversation:
    """`conv` itself when its body fits; with `trim`, `conv` without its oldest history
    messages (the fewest that make it fit); else GatewayError(CONTEXT_TOO_LONG). `measure`
    gives the size that counts (images left out: `text_bytes`). Too many tools, or images over
    `max_image_bytes` in what would be sent, are a 400 (INVALID_REQUEST)."""
    check_tools(conv, max_tools=max_tools)
    check_current_message(conv)
    size = measure(conv)
    if size <= max_body_bytes:
        check_image_bytes(conv, max_bytes=max_image_bytes)
        return conv
    if not trim:
        hint = " (The gateway can drop the oldest turns instead: KI2API_TRIM_HISTORY.)"
        raise _too_long("request size upstream", size, max_body_bytes, "bytes", hint)
    cuts = cut_points(conv.messages)
    if not cuts:
        check_budget(size, max_body_bytes=max_body_bytes, trimmed=True)
    sizes: dict[int, int] = {}

    def size_at(j: int) -> int:
        if j not in sizes:
            sizes[j] = measure(replace(conv, messages=conv.messages[cuts[j] :]))
        return sizes[j]

    last = len(cuts) - 1
    check_budget(size_at(last), max_body_bytes=max_body_bytes, trimmed=True)  # the smallest
    prefix = list(accumulate((_message_bytes(m) for m in conv.messages), initial=0))
    best = _search([prefix[k] for k in cuts], size, max_body_bytes, size_at)
    trimmed = replace(conv, messages=conv.messages[cuts[best] :])
    check_current_message(trimmed)
    check_image_bytes(trimmed, max_bytes=max_image_bytes)
    return trimmed
