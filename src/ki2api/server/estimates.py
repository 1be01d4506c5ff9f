"""Per-request token figures both routes need, computed the same way for both surfaces.

The estimate runs on the event loop: the tokenizer holds the GIL, so a worker thread would not
let other streams flow any better; instead its work is bounded (`core.tokenizer`: at most
`REQUEST_TOKENIZE_CHARS` characters tokenized per request, long texts sampled), a few tens of
milliseconds at worst. A request about to be refused is not tokenized at all (`refused=True`).
"""

from __future__ import annotations

import functools

from ki2api.core.messages import Conversation
from ki2api.core.stream_limits import StreamLimiter
from ki2api.core.tokens import estimate_conversation_tokens, estimate_text_tokens

__all__ = ["estimate_input_tokens", "stream_limiter"]


def estimate_input_tokens(conv: Conversation, *, refused: bool = False) -> int:
    """The tokenizer estimate (a fallback for when Kiro reports no usage, and count_tokens);
    `refused`: for an error message only, the crude bound without tokenizing anything."""
    return estimate_conversation_tokens(conv, tokenize_chars=0 if refused else None)


def stream_limiter(conv: Conversation, input_tokens: int) -> StreamLimiter | None:
    """The max_tokens / stop enforcer for this request, or None when it asks for neither."""
    params = conv.params
    if params.max_tokens is None and not params.stop:
        return None
    return StreamLimiter(
        max_tokens=params.max_tokens,
        stop=params.stop,
        input_tokens=input_tokens,
        count_tokens=functools.partial(estimate_text_tokens, model_id=conv.model_id),
    )
