"""kiro.budget: refuse or trim a request over the upstream size, before it is sent.

Sizes are measured with the real `build_request` + orjson (what the backend sends), and the
trimmed bodies are checked with the emulator's validator (the upstream's rules).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.messages import (
    Conversation,
    ImagePart,
    Message,
    TextPart,
    ToolResultPart,
    ToolSpec,
    ToolUsePart,
)
from ki2api.kiro.request.budget import (
    DEFAULT_MAX_UPSTREAM_BYTES,
    MAX_CURRENT_MESSAGE_CHARS,
    check_budget,
    check_current_message,
    cut_points,
    fit_conversation,
    protected_start,
)
from ki2api.kiro.request.build import build_request
from kiro_emulator.validate import parse_chat

TOOL = ToolSpec("read_file", "Read a file.", {"type": "object", "properties": {}})


def u(text: str = "question") -> Message:
    return Message("user", (TextPart(text),))


def a(text: str = "answer") -> Message:
    return Message("assistant", (TextPart(text),))


def call(*ids: str, text: str = "") -> Message:
    parts = (TextPart(text),) if text else ()
    return Message("assistant", parts + tuple(ToolUsePart(i, "read_file", {"p": i}) for i in ids))


def res(*ids: str, text: str = "result") -> Message:
    return Message("user", tuple(ToolResultPart(i, (TextPart(text),)) for i in ids))


def body_of(conv: Conversation) -> bytes:
    return orjson.dumps(build_request(conv, conversation_id="c" * 36, profile_arn=None))


@dataclass
class Meter:
    """The backend's measure, counting its calls."""

    calls: int = 0
    sizes: list[int] = field(default_factory=list)

    def __call__(self, conv: Conversation) -> int:
        self.calls += 1
        self.sizes.append(len(body_of(conv)))
        return self.sizes[-1]


def conv_of(*messages: Message, system: tuple[str, ...] = ("Be brief.",)) -> Conversation:
    return Conversation("claude-sonnet-4", messages, system=system, tools=(TOOL,))


# --- where a conversation may be cut ----------------------------------------------------------

# (id, messages, protected start, valid cuts)
CUTS: list[tuple[str, tuple[Message, ...], int, list[int]]] = [
    ("plain", (u(), a(), u(), a(), u()), 4, [2, 4]),
    ("prefill-kept", (u(), a(), u(), a()), 2, [2]),
    ("only-current", (u(),), 0, []),
    ("merged-users", (u(), u(), a(), u(), u()), 3, [3]),
    ("leading-assistant", (a(), u(), a(), u()), 3, [1, 3]),
    ("pair-not-split", (u(), call("t1"), res("t1"), a(), u()), 4, [4]),
    ("current-answers-call", (u(), a(), u(), call("t1"), res("t1")), 4, [2]),
    ("late-result", (u(), call("t1"), u(), a(), res("t1"), a(), u()), 6, [6]),
    ("result-in-second-user", (u(), call("t1"), u(), res("t1"), a(), u()), 5, [5]),
    ("orphan-result-no-pin", (u(), a(), res("zz"), a(), u()), 4, [2, 4]),
]


@pytest.mark.parametrize(
    ("messages", "start", "cuts"), [c[1:] for c in CUTS], ids=[c[0] for c in CUTS]
)
def test_cut_points(messages: tuple[Message, ...], start: int, cuts: list[int]) -> None:
    assert protected_start(messages) == start
    assert cut_points(messages) == cuts


# --- refusing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "limit", "refused"),
    [(599_999, 600_000, False), (600_000, 600_000, False), (600_001, 600_000, True), (10, 9, True)],
    ids=["under", "at", "over", "tiny"],
)
def test_check_budget(size: int, limit: int, refused: bool) -> None:
    if not refused:
        check_budget(size, max_body_bytes=limit)
        return
    with pytest.raises(GatewayError) as info:
        check_budget(size, max_body_bytes=limit)
    assert info.value.kind is ErrorKind.CONTEXT_TOO_LONG
    assert (info.value.code, info.value.param) == ("context_length_exceeded", "messages")
    assert f"{size:,} bytes" in info.value.message
    assert f"maximum context length is {limit:,}" in info.value.message


def test_small_conversation_is_sent_as_it_is() -> None:
    conv = conv_of(u(), a(), u())
    meter = Meter()
    assert fit_conversation(conv, max_body_bytes=DEFAULT_MAX_UPSTREAM_BYTES, measure=meter) is conv
    assert meter.calls == 1


def _history(turns: int, chars: int) -> tuple[Message, ...]:
    return tuple(m for i in range(turns) for m in (u(f"q{i} " + "x" * chars), a(f"a{i} ")))


@pytest.mark.parametrize("trim", [False, True], ids=["trim-off", "trim-on"])
def test_over_the_limit_is_refused_without_trimming(trim: bool) -> None:
    conv = conv_of(*_history(10, 2_000), u("now"))
    meter = Meter()
    limit = 5_000
    if trim:
        limit = len(body_of(conv)) - 1
        assert len(fit_conversation(conv, max_body_bytes=limit, trim=True, measure=meter).messages)
        return
    with pytest.raises(GatewayError) as info:
        fit_conversation(conv, max_body_bytes=limit, trim=False, measure=meter)
    assert info.value.kind is ErrorKind.CONTEXT_TOO_LONG
    assert f"{meter.sizes[0]:,} bytes" in info.value.message
    assert "KI2API_TRIM_HISTORY" in info.value.message
    assert meter.calls == 1


# (id, conversation, limit) where even the smallest sendable conversation is too big
MINIMAL_TOO_BIG: list[tuple[str, Conversation, int]] = [
    ("current", conv_of(*_history(5, 100), u("y" * 20_000)), 10_000),
    ("system", conv_of(*_history(5, 100), u("hi"), system=("s" * 20_000,)), 10_000),
    ("pinned-pair", conv_of(u(), call("t1"), res("t1", text="r" * 20_000)), 10_000),
    ("no-history", conv_of(u("z" * 20_000)), 10_000),
]


@pytest.mark.parametrize(
    ("conv", "limit"), [m[1:] for m in MINIMAL_TOO_BIG], ids=[m[0] for m in MINIMAL_TOO_BIG]
)
def test_minimal_conversation_too_big_is_refused(conv: Conversation, limit: int) -> None:
    with pytest.raises(GatewayError) as info:
        fit_conversation(conv, max_body_bytes=limit, trim=True, measure=Meter())
    assert info.value.kind is ErrorKind.CONTEXT_TOO_LONG
    assert "oldest history dropped" in info.value.message


def test_current_message_over_kiro_chars_is_refused_before_measuring() -> None:
    conv = conv_of(u(), a(), u("w" * (MAX_CURRENT_MESSAGE_CHARS + 1)))
    meter = Meter()
    with pytest.raises(GatewayError) as info:
        fit_conversation(conv, max_body_bytes=10**9, trim=True, measure=meter)
    assert info.value.kind is ErrorKind.CONTEXT_TOO_LONG
    assert "characters" in info.value.message
    assert meter.calls == 0


@pytest.mark.parametrize(
    ("conv", "refused"),
    [
        (conv_of(u("w" * MAX_CURRENT_MESSAGE_CHARS), system=()), False),
        # without history the system texts are prefixed to the current message
        (conv_of(u("w" * (MAX_CURRENT_MESSAGE_CHARS - 5)), system=("sys" * 5,)), True),
        (conv_of(u(), a(), u("w" * (MAX_CURRENT_MESSAGE_CHARS - 5)), system=("s" * 50,)), False),
        (conv_of(u("w" * (MAX_CURRENT_MESSAGE_CHARS + 9)), a("prefill")), False),
    ],
    ids=["at-limit", "system-counts-without-history", "system-in-history", "prefill"],
)
def test_check_current_message(conv: Conversation, refused: bool) -> None:
    if refused:
        with pytest.raises(GatewayError):
            check_current_message(conv)
    else:
        check_current_message(conv)


# --- trimming -------------------------------------------------------------------------------


def assert_valid_upstream(conv: Conversation) -> None:
    """The emulator's validator (Kiro's rules) accepts the body, whatever the size limit."""
    raw = body_of(conv)
    request = parse_chat(raw, "IdC") if len(raw) <= 615_000 else None
    assert request is not None


def assert_pairs_intact(conv: Conversation) -> None:
    uses = {p.id for m in conv.messages if m.role == "assistant" for p in m.parts
            if isinstance(p, ToolUsePart)}  # fmt: skip
    results = {p.tool_use_id for m in conv.messages if m.role == "user" for p in m.parts
               if isinstance(p, ToolResultPart)}  # fmt: skip
    assert results <= uses, "a kept result lost its call"
    assert uses <= results, "a kept call lost its result"


def agent_history(rounds: int, result_chars: int) -> tuple[Message, ...]:
    out: list[Message] = []
    for i in range(rounds):
        ids = [f"r{i}a", f"r{i}b"] if i % 3 == 0 else [f"r{i}"]
        out += [u(f"task {i}"), call(*ids, text=f"calling {i}"), res(*ids, text="o" * result_chars)]
        out.append(a(f"done {i}"))
    return tuple(out)


TRIMS: list[tuple[str, Conversation, int]] = [
    ("plain", conv_of(*_history(40, 1_000), u("now")), 20_000),
    ("agent", conv_of(*agent_history(30, 1_500), u("next")), 25_000),
    ("agent-current-answers", conv_of(*agent_history(30, 1_500)[:-1]), 25_000),
    ("prefill", conv_of(*_history(40, 1_000), u("now"), a("Sure,")), 15_000),
    (
        "images",
        conv_of(*(Message("user", (ImagePart("image/png", "QUFB" * 500),)), a()) * 20, u()),
        12_000,
    ),  # fmt: skip
    ("merged", conv_of(*(m for i in range(30) for m in (u("p" * 300), u("q" * 300), a()))), 9_000),
]


@pytest.mark.parametrize(("conv", "limit"), [t[1:] for t in TRIMS], ids=[t[0] for t in TRIMS])
def test_trimming_drops_the_fewest_oldest_messages(conv: Conversation, limit: int) -> None:
    assert len(body_of(conv)) > limit
    out = fit_conversation(conv, max_body_bytes=limit, trim=True, measure=Meter())
    kept = len(out.messages)
    assert out.messages == conv.messages[-kept:]  # a suffix: only the oldest go
    assert len(body_of(out)) <= limit
    assert out.system == conv.system and out.tools == conv.tools
    assert out.messages[0].role == "user"
    assert protected_start(out.messages) == protected_start(conv.messages) - (
        len(conv.messages) - kept
    )  # the current message (and a prefill) are all there
    assert_pairs_intact(out)
    assert_valid_upstream(out)
    earlier = [k for k in cut_points(conv.messages) if k < len(conv.messages) - kept]
    if earlier:  # keeping one more turn would not fit
        more = conv.messages[earlier[-1] :]
        assert len(body_of(Conversation(conv.model_id, more, conv.system, conv.tools))) > limit


def test_trimming_a_long_history_measures_a_few_times() -> None:
    conv = conv_of(*agent_history(500, 200), *_history(1_500, 150), u("now"))  # 2,000 turns
    assert len(conv.messages) > 4_000
    for limit in (40_000, 200_000, 400_000, 600_000):
        meter = Meter()
        out = fit_conversation(conv, max_body_bytes=limit, trim=True, measure=meter)
        assert len(body_of(out)) <= limit
        # measured: 6-10; one measure per candidate would be thousands, bisection alone ~13
        assert meter.calls <= 12, (limit, meter.calls)


@pytest.mark.parametrize("seed", range(12))
def test_trimming_matches_the_brute_force_answer(seed: int) -> None:
    rng = random.Random(seed)
    messages: list[Message] = []
    for i in range(rng.randint(3, 40)):
        kind = rng.random()
        if kind < 0.3:
            messages += [u("x" * rng.randint(1, 900)), call(f"t{i}"), res(f"t{i}", text="r" * 300)]
            messages.append(a("ok"))
        elif kind < 0.4:  # a result given late, after another exchange
            messages += [u(), call(f"t{i}"), u("wait"), a("hm"), res(f"t{i}"), a("y" * 200)]
        else:
            messages += [u("q" * rng.randint(1, 900)), a("a" * rng.randint(1, 900))]
    messages.append(u("now"))
    conv = conv_of(*messages)
    full = len(body_of(conv))
    limit = rng.randint(full // 4, full)
    sized: Callable[[int], int] = lambda k: len(body_of(conv_of(*messages[k:])))  # noqa: E731
    fitting = [k for k in [0, *cut_points(messages)] if sized(k) <= limit]
    if not fitting:
        with pytest.raises(GatewayError):
            fit_conversation(conv, max_body_bytes=limit, trim=True, measure=Meter())
        return
    out = fit_conversation(conv, max_body_bytes=limit, trim=True, measure=Meter())
    assert len(out.messages) == len(messages) - fitting[0]
    assert_pairs_intact(out)
