"""Per-request token figures both routes need, computed the same way for both surfaces.

The estimate runs on the event loop: the tokenizer holds the GIL, so a worker thread would not
let other streams flow any better; instead its work is bounded (`core.tokenizer`: at most
`REQUEST_TOKENIZE_CHARS` characters tokenized per request, long texts sampled), a few tens of
milliseconds at worst. A request about to be refused is not tokenized at all (`refused=True`).

A chat request's estimate is an `InputEstimate`: computed once, while its request to Kiro is on
its way (the backend calls it then), so it is not part of the time to first token.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from ki2api.core.messages import Conversation
from ki2api.core.stream_limits import StreamLimiter
from ki2api.core.tokens import estimate_conversation_tokens, estimate_text_tokens
from ki2api.core.trace import RequestTrace

__all__ = ["InputEstimate", "estimate_input_tokens", "stream_limiter"]


def estimate_input_tokens(conv: Conversation, *, refused: bool = False) -> int:
    """The tokenizer estimate (a fallback for when Kiro reports no usage, and count_tokens);
    `refused`: for an error message only, the crude bound without tokenizing anything."""
    return estimate_conversation_tokens(conv, tokenize_chars=0 if refused else None)


class InputEstimate:
    """One chat request's `estimate_input_tokens`, computed on the first call and the same on
    every later one. `kiro.backend` calls it once the request to Kiro is started (on the first
    turn of the event loop the upstream call waits), so the estimate is made while Kiro thinks;
    anything else that needs it earlier computes it then. Until it is computed it keeps the
    conversation; the value goes into the request's trace (unless Kiro's usage got there
    first, which then stays, as it would have replaced the estimate)."""

    __slots__ = ("_conv", "_tokens", "_trace")

    def __init__(self, conv: Conversation, trace: RequestTrace | None = None) -> None:
        self._conv: Conversation | None = conv
        self._trace = trace
        self._tokens: int | None = None

    @property
    def computed(self) -> bool:
        return self._tokens is not None

    def __call__(self) -> int:
        tokens = self._tokens
        if tokens is None:
            conv = self._conv
            assert conv is not None
            tokens = self._tokens = estimate_input_tokens(conv)
            trace, self._conv, self._trace = self._trace, None, None
            if trace is not None and trace.input_tokens is None:
                trace.input_tokens = tokens
        return tokens


def stream_limiter(
    conv: Conversation, input_tokens: int | Callable[[], int]
) -> StreamLimiter | None:
    """The max_tokens / stop enforcer for this request, or None when it asks for neither
    (`input_tokens`: the estimate, or an `InputEstimate` asked only if the limiter ends the
    answer itself)."""
    params = conv.params
    if params.max_tokens is None and not params.stop:
        return None
    return StreamLimiter(
        max_tokens=params.max_tokens,
        stop=params.stop,
        input_tokens=input_tokens,
        count_tokens=functools.partial(estimate_text_tokens, model_id=conv.model_id),
    )
