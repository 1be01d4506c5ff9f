"""Per-request token figures both routes need, computed the same way for both surfaces."""

from __future__ import annotations

import asyncio
import functools

from ki2api.core.messages import Conversation
from ki2api.core.stream_limits import StreamLimiter
from ki2api.core.tokens import estimate_conversation_tokens, estimate_text_tokens

__all__ = ["estimate_input_tokens", "stream_limiter"]

_INLINE_ESTIMATE_CHARS = 50_000


async def estimate_input_tokens(conv: Conversation) -> int:
    """The tokenizer estimate (a fallback for when Kiro reports no usage). Large requests are
    counted in a worker thread (the tokenizer releases the GIL) so other streams keep flowing."""
    size = sum(len(s) for s in conv.system) + sum(len(m.text()) for m in conv.messages)
    if size <= _INLINE_ESTIMATE_CHARS:
        return estimate_conversation_tokens(conv)
    return await asyncio.to_thread(estimate_conversation_tokens, conv)


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
