"""The input-token estimate of a chat request (server/estimates.py `InputEstimate`) is made
once, while the request to Kiro is on its way, and every consumer reports that one value: the
OpenAI usage (streamed usage chunk, body, a max_tokens cut), the Anthropic `message_start` and
`message_delta` usage and body, the Responses API's usage, the usage row, the Anthropic context
overflow's token count; count_tokens gives the same figure for the same request.

The gateway runs in this process (tests/conftest.py), so the estimator is wrapped here: it
returns the real estimate (plus `offset`, to make the figure visible where a floor would hide
it) and records each value it made. The emulator is told `context_usage: 0`, so Kiro reports no
usage of its own and the answers fall back on the estimate.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx
import pytest

from ki2api.core.messages import Conversation
from ki2api.core.tokens import estimate_conversation_tokens
from ki2api.server import estimates
from ki2api.state.base import UsageRow
from ki2api.state.sqlite import SQLiteStore
from tests.conftest import API_KEY, Gateway, set_behaviour
from tests.support.polling import eventually

MODEL = "claude-sonnet-4-6"  # a 1,000,000-token window
KEY = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}


def emu(**directive: Any) -> str:
    return f"<emu>{json.dumps(directive)}</emu>"


PROMPT = "Please count the tokens of this request; it says little. " + emu(
    text="one two three four five six seven eight nine ten", chunks=5, context_usage=0
)


@dataclass
class Estimator:
    """The real estimator, recording what it made (`offset` added)."""

    offset: int = 0
    made: list[int] = field(default_factory=list)

    def __call__(self, conv: Conversation, *, tokenize_chars: int | None = None) -> int:
        value = estimate_conversation_tokens(conv, tokenize_chars=tokenize_chars)
        if tokenize_chars is None:  # not the crude bound of a request refused before Kiro
            value += self.offset
            self.made.append(value)
        return value


@pytest.fixture
def estimator(monkeypatch: pytest.MonkeyPatch) -> Estimator:
    recorder = Estimator()
    monkeypatch.setattr(estimates, "estimate_conversation_tokens", recorder)
    return recorder


def rows(gw: Gateway) -> list[UsageRow]:
    store = SQLiteStore.open(gw.settings.data_dir / "ki2api.sqlite3")
    try:
        return asyncio.run(store.usage_rows(limit=20))
    finally:
        store.close()


def row_of(gw: Gateway, endpoint: str) -> UsageRow:
    found: list[UsageRow] = eventually(lambda: [r for r in rows(gw) if r.endpoint == endpoint])
    assert len(found) == 1
    return found[0]


def sse(r: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    name = ""
    for line in r.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and line != "data: [DONE]":
            out.append((name, json.loads(line[6:])))
    return out


# --- what each consumer reported: (gateway) -> (endpoint, the input-token figures seen) ---


def _openai_stream(gw: Gateway, finish: str, **limits: Any) -> tuple[str, list[int]]:
    chunks = list(
        gw.openai().chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            stream_options={"include_usage": True},
            **limits,
        )
    )
    usage = chunks[-1].usage
    assert usage is not None and chunks[-2].choices[0].finish_reason == finish
    return "/v1/chat/completions", [usage.prompt_tokens]


def openai_stream(gw: Gateway) -> tuple[str, list[int]]:
    return _openai_stream(gw, "stop")


def openai_max_tokens(gw: Gateway) -> tuple[str, list[int]]:
    """The limiter's own stop: its Usage carries the estimate (Kiro's end is never read)."""
    return _openai_stream(gw, "length", max_tokens=2)


def openai_body(gw: Gateway) -> tuple[str, list[int]]:
    resp = gw.openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": PROMPT}]
    )
    assert resp.usage is not None
    return "/v1/chat/completions", [resp.usage.prompt_tokens]


def responses_body(gw: Gateway) -> tuple[str, list[int]]:
    resp = gw.openai().responses.create(model=MODEL, input=PROMPT)
    assert resp.usage is not None
    return "/v1/responses", [resp.usage.input_tokens]


def anthropic_stream(gw: Gateway) -> tuple[str, list[int]]:
    body = {"model": MODEL, "max_tokens": 100, "stream": True}
    body["messages"] = [{"role": "user", "content": PROMPT}]
    with httpx.stream("POST", f"{gw.url}/v1/messages", json=body, headers=KEY) as r:
        assert r.status_code == 200
        events = dict(sse(r))
    start = events["message_start"]["message"]["usage"]["input_tokens"]
    return "/v1/messages", [start, events["message_delta"]["usage"]["input_tokens"]]


def anthropic_body(gw: Gateway) -> tuple[str, list[int]]:
    message = gw.anthropic().messages.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": PROMPT}]
    )
    return "/v1/messages", [message.usage.input_tokens]


CONSUMERS: list[Callable[[Gateway], tuple[str, list[int]]]] = [
    openai_stream,
    openai_max_tokens,
    openai_body,
    responses_body,
    anthropic_stream,
    anthropic_body,
]


@pytest.mark.parametrize("consumer", CONSUMERS, ids=lambda f: f.__name__)
def test_every_consumer_reports_the_one_estimate(
    gateway: Gateway, estimator: Estimator, consumer: Callable[[Gateway], tuple[str, list[int]]]
) -> None:
    endpoint, seen = consumer(gateway)
    assert len(estimator.made) == 1  # made once for the request
    estimate = estimator.made[0]
    assert estimate > 0 and seen == [estimate] * len(seen)
    row = row_of(gateway, endpoint)
    assert row.outcome == "ok" and row.input_tokens == estimate


@pytest.mark.parametrize("stream", [False, True])
def test_the_context_overflow_kiro_refuses_names_the_estimate(
    gateway: Gateway, estimator: Estimator, stream: bool
) -> None:
    """Kiro's "too long" after the request was sent: the compaction wording's count is the
    estimate (offset above the window, where it shows instead of the window + 1)."""
    estimator.offset = 2_000_000
    refusal = {"message": "Input is too long.", "reason": "CONTENT_LENGTH_EXCEEDS_THRESHOLD"}
    content = "Too long for Kiro. " + emu(error={"status": 400, "body": refusal})
    client = gateway.anthropic()
    with pytest.raises(anthropic.BadRequestError) as info:
        messages: Any = [{"role": "user", "content": content}]
        if stream:
            with client.messages.stream(model=MODEL, max_tokens=100, messages=messages) as s:
                s.get_final_message()
        else:
            client.messages.create(model=MODEL, max_tokens=100, messages=messages)
    assert len(estimator.made) == 1
    estimate = estimator.made[0]
    message = info.value.body["error"]["message"]  # type: ignore[index]
    assert message == f"prompt is too long: {estimate} tokens > 1000000 maximum"
    row = row_of(gateway, "/v1/messages")
    assert row.outcome == "context_too_long" and row.input_tokens == estimate


def test_count_tokens_gives_what_the_answer_reports(gateway: Gateway, estimator: Estimator) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]}
    r = httpx.post(f"{gateway.url}/v1/messages/count_tokens", json=body, headers=KEY)
    assert r.status_code == 200
    counted = r.json()["input_tokens"]
    assert estimator.made == [counted]
    _, seen = anthropic_stream(gateway)
    assert estimator.made == [counted, counted] and seen == [counted, counted]


def test_a_refusal_before_kiro_keeps_the_estimate_in_its_usage_row(
    gateway: Gateway, estimator: Estimator
) -> None:
    """The only account is out of quota after a first answer says so: the next request is
    refused without asking Kiro, and its usage row still has the input tokens, as before."""

    def ask(content: str) -> int:
        return httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": content}]},
            headers={"Authorization": f"Bearer {API_KEY}"},
        ).status_code

    set_behaviour(gateway.emulator_url, gateway.account.id, quota_exhausted=True)
    assert ask("Spend it.") == 429
    sent = len(gateway.emulator_requests())
    assert ask(PROMPT) == 429
    assert len(gateway.emulator_requests()) == sent  # Kiro was not asked
    assert len(estimator.made) == 2
    refused = eventually(lambda: [r for r in rows(gateway) if r.input_tokens == estimator.made[1]])
    assert len(refused) == 1 and refused[0].outcome != "ok" and refused[0].attempts == 0
