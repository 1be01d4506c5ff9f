"""`InputEstimate` (server/estimates.py): one request's input-token estimate, made once and
late: the backend asks for it while the request to Kiro is on its way, the max_tokens limiter
only for a stop of its own. Its value is the one `estimate_input_tokens` gives."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ki2api.core.events import Event, MessageStop, TextDelta, Usage
from ki2api.core.messages import Conversation, GenParams, Message, TextPart
from ki2api.core.tokens import estimate_conversation_tokens
from ki2api.core.trace import RequestTrace
from ki2api.kiro.accounts.pool import AccountPool
from ki2api.kiro.backend import BackendOptions, KiroBackend
from ki2api.server import estimates
from ki2api.server.estimates import InputEstimate, estimate_input_tokens, stream_limiter
from tests.support.fake_pool import fake_pool
from tests.support.fake_transport import FakeChatTransport, Pause, Reply, text_frame

CONV = Conversation(
    model_id="claude-sonnet-4.5",
    messages=(Message("user", (TextPart("How many tokens are in this sentence, roughly?"),)),),
)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When each full estimate was made (the real estimator still answers)."""
    made: list[float] = []
    real = estimate_conversation_tokens

    def counting(conv: Conversation, *, tokenize_chars: int | None = None) -> int:
        made.append(time.monotonic())
        return real(conv, tokenize_chars=tokenize_chars)

    monkeypatch.setattr(estimates, "estimate_conversation_tokens", counting)
    return made


def trace() -> RequestTrace:
    return RequestTrace(at=0.0, endpoint="/v1/chat/completions", client_key="k")


def test_made_once_with_the_value_of_estimate_input_tokens(calls: list[float]) -> None:
    expected = estimate_input_tokens(CONV)
    calls.clear()
    noted = trace()
    estimate = InputEstimate(CONV, noted)
    assert not estimate.computed and noted.input_tokens is None and not calls
    assert estimate() == expected and estimate() == expected
    assert estimate.computed and len(calls) == 1
    assert noted.input_tokens == expected


def test_the_upstream_usage_noted_first_stays_in_the_trace(calls: list[float]) -> None:
    noted = trace()
    noted.usage(Usage(input_tokens=4321, output_tokens=5))
    assert InputEstimate(CONV, noted)() == estimate_input_tokens(CONV)
    assert noted.input_tokens == 4321


@pytest.mark.parametrize(
    ("params", "asked"),
    [
        (GenParams(), 0),  # no limiter at all
        (GenParams(max_tokens=1000), 0),  # a limiter that never stops the answer itself
        (GenParams(max_tokens=2), 1),  # its own stop: its Usage carries the estimate
        (GenParams(stop=("three",)), 1),
    ],
)
def test_the_limiter_asks_only_for_a_stop_of_its_own(
    calls: list[float], params: GenParams, asked: int
) -> None:
    conv = Conversation(model_id=CONV.model_id, messages=CONV.messages, params=params)
    estimate = InputEstimate(conv)
    limiter = stream_limiter(conv, estimate)
    events: list[Event] = [TextDelta("one two three four five six seven"), MessageStop("end_turn")]
    out = events if limiter is None else limiter.feed_batch(events)
    assert len(calls) == asked
    usages = [ev for ev in out if isinstance(ev, Usage)]
    assert [u.input_tokens for u in usages] == ([estimate()] if asked else [])


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[AccountPool]:
    accounts, _, http = await fake_pool(tmp_path, 1)
    yield accounts
    await http.aclose()


async def test_the_backend_makes_it_while_kiro_is_asked(
    pool: AccountPool, calls: list[float]
) -> None:
    """Made after the request was posted and before the answer's first byte (Kiro is slow
    here: 50 ms); the usage the answer falls back on (no usage from Kiro) is that value."""
    chat = FakeChatTransport([Reply(body=[Pause(0.05), text_frame("hi"), text_frame(" there")])])
    backend = KiroBackend(chat, pool, BackendOptions(api_base="https://q.test"))
    estimate = InputEstimate(CONV)
    seen: list[tuple[int, bool]] = []  # (requests posted, computed) when the estimate ran

    def watched() -> int:
        seen.append((len(chat.posted), estimate.computed))
        return estimate()

    batches = backend.stream(CONV, input_tokens=watched)
    first = await anext(batches)
    first_at = time.monotonic()
    rest = [ev async for batch in batches for ev in batch]
    assert seen[0] == (1, False)  # the first call: posted already, made by this call
    assert len(calls) == 1 and first_at - calls[0] > 0.03  # made during Kiro's 50 ms
    assert any(isinstance(ev, TextDelta) for ev in first)
    usage = [ev for ev in [*first, *rest] if isinstance(ev, Usage)]
    assert [u.input_tokens for u in usage] == [estimate_input_tokens(CONV)]
