"""The emulator's chat replies over real HTTP: echo, chunking, tool calls, every directive."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from kiro_emulator import EmulatorConfig
from tests.component.test_emulator_kit import (
    CHAT_TARGET,
    Emu,
    GatedSleep,
    chat_body,
    emu,
    events,
    messages,
    running,
    text_of,
    tool_spec,
)

TOOL_USE_ID = re.compile(r"^tooluse_[A-Za-z0-9_-]{22}$")
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer"},
        "ratio": {"type": "number"},
        "alerts": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "where": {"type": "object", "properties": {"lat": {"type": "number"}}},
        "note": {"type": ["null", "string"]},
    },
    "required": ["city"],
}
WEATHER_INPUT = {
    "city": "x",
    "unit": "celsius",
    "days": 1,
    "ratio": 1,
    "alerts": True,
    "tags": ["x"],
    "where": {"lat": 1},
    "note": "x",
}


@pytest.fixture(scope="module")
def em() -> Iterator[Emu]:
    with running() as e:
        yield e


def ok_events(em: Emu, content: str, **kw: Any) -> list[tuple[str, dict[str, Any]]]:
    r = em.chat(body=chat_body(content, **kw))
    assert r.status_code == 200, r.text
    return events(r.content)


def test_default_reply_echoes_in_eight_chunks_then_context_and_metering(em: Emu) -> None:
    r = em.chat("Hello there, emulator")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.amazon.eventstream"
    assert (
        r.headers["x-amzn-codewhisperer-conversation-id"]
        == chat_body()["conversationState"]["conversationId"]
    )
    assert r.headers["x-amzn-requestid"]
    evts = events(r.content)
    kinds = [k for k, _ in evts]
    # real 2026 streams end with contextUsageEvent, then meteringEvent (docs/kiro-protocol.md §5.8)
    assert kinds == ["assistantResponseEvent"] * 8 + ["contextUsageEvent", "meteringEvent"]
    assert text_of(evts) == "Echo: Hello there, emulator"
    context, metering = evts[-2][1], evts[-1][1]
    assert metering["unit"] == "credit" and metering["unitPlural"] == "credits"
    assert isinstance(metering["usage"], float) and metering["usage"] > 0
    assert 0 < context["contextUsagePercentage"] < 100


def test_frames_carry_kiro_headers_in_kiro_order(em: Emu) -> None:
    first = messages(em.chat("hi").content)[0]
    assert list(first.headers.items()) == [
        (":event-type", "assistantResponseEvent"),
        (":content-type", "application/json"),
        (":message-type", "event"),
    ]


def test_echo_is_truncated_to_2000_characters(em: Emu) -> None:
    content = "".join(chr(0x4E00 + i % 500) for i in range(5000))
    assert text_of(ok_events(em, content)) == ("Echo: " + content)[:2000]


def test_multibyte_text_is_split_on_characters(em: Emu) -> None:
    content = "héllo 🎉 wörld ✓ 日本語" + emu({"chunks": 40})
    evts = ok_events(em, content)
    pieces = [p["content"] for k, p in evts if k == "assistantResponseEvent"]
    assert "".join(pieces) == "Echo: héllo 🎉 wörld ✓ 日本語"
    assert len(pieces) == len("Echo: héllo 🎉 wörld ✓ 日本語")  # one character per frame


@pytest.mark.parametrize(
    ("chunks", "expected_frames"), [(1, 1), (3, 3), (10, 10), (500, 10)], ids=str
)
def test_chunks_directive(em: Emu, chunks: int, expected_frames: int) -> None:
    evts = ok_events(em, emu({"chunks": chunks, "text": "0123456789"}))
    pieces = [p["content"] for k, p in evts if k == "assistantResponseEvent"]
    assert len(pieces) == expected_frames
    assert "".join(pieces) == "0123456789"


def test_text_and_thinking_directives(em: Emu) -> None:
    evts = ok_events(em, emu({"text": "The answer.", "thinking": "Let me think."}, "q? "))
    assert text_of(evts) == "<thinking>Let me think.</thinking>\n\nThe answer."


@pytest.mark.parametrize(("n", "text"), [(1, "abc"), (20, "abc"), (5, "0123456789")], ids=str)
def test_events_directive_emits_exactly_n_content_frames(em: Emu, n: int, text: str) -> None:
    evts = ok_events(em, emu({"events": n, "text": text}))
    pieces = [p["content"] for k, p in evts if k == "assistantResponseEvent"]
    assert len(pieces) == n
    assert all(p and p in text for p in pieces)
    if n >= len(text):
        assert "".join(pieces).startswith(text)


def test_repeat_text_sends_identical_consecutive_events(em: Emu) -> None:
    evts = ok_events(em, emu({"text": "A", "repeat_text": ["ha", "ha", "ha"]}))
    assert [p["content"] for k, p in evts if k == "assistantResponseEvent"] == [
        "A",
        "ha",
        "ha",
        "ha",
    ]


def test_metadata_usage_and_context_usage_directives(em: Emu) -> None:
    evts = ok_events(em, emu({"metadata_usage": True, "context_usage": 42.5}, "hi"))
    kinds = [k for k, _ in evts]
    assert kinds[-3:] == ["metadataEvent", "contextUsageEvent", "meteringEvent"]
    usage = evts[-3][1]["tokenUsage"]
    assert usage["totalTokens"] == usage["uncachedInputTokens"] + usage["outputTokens"]
    assert usage["outputTokens"] >= 1 and usage["uncachedInputTokens"] >= 1
    assert evts[-2][1] == {"contextUsagePercentage": 42.5}


def test_default_context_usage_grows_with_request_and_shrinks_with_window(em: Emu) -> None:
    def pct(content: str, model: str) -> float:
        return float(ok_events(em, content, model=model)[-2][1]["contextUsagePercentage"])

    small, large = pct("x", "claude-sonnet-4.5"), pct("x" * 40_000, "claude-sonnet-4.5")
    assert 0 < small < large
    assert pct("x" * 40_000, "claude-sonnet-4.6") < large  # 1M-token window


@pytest.mark.parametrize(
    "content",
    ["<emu>{not json}</emu> hi", "<emu>[1, 2]</emu> hi", '<emu>{"chunks": "many"}</emu>x'],
    ids=["invalid-json", "not-an-object", "bad-value-type"],
)
def test_bad_directives_never_crash(em: Emu, content: str) -> None:
    evts = ok_events(em, content)
    text = text_of(evts)
    if "chunks" in content:
        assert text == "Echo: x"  # valid JSON is consumed; the bad value is ignored
    else:
        assert text == "Echo: " + content  # kept literally


def test_call_toolname_builds_input_from_schema(em: Emu) -> None:
    tools = [tool_spec("get_weather", WEATHER_SCHEMA), tool_spec("other")]
    evts = ok_events(em, "please call get_weather now", tools=tools)
    assert all(k == "toolUseEvent" for k, _ in evts[:-2])
    start, *middle, stop = [p for k, p in evts if k == "toolUseEvent"]
    assert start == {"name": "get_weather", "toolUseId": start["toolUseId"]}
    assert TOOL_USE_ID.match(start["toolUseId"])
    assert len(middle) == 4  # default fragments
    assert all(m["name"] == "get_weather" and m["toolUseId"] == start["toolUseId"] for m in middle)
    assert orjson.loads("".join(m["input"] for m in middle)) == WEATHER_INPUT
    assert stop == {"name": "get_weather", "stop": True, "toolUseId": start["toolUseId"]}
    assert text_of(evts) == ""


def test_call_of_an_unoffered_tool_is_just_echoed(em: Emu) -> None:
    evts = ok_events(em, "call missing_tool", tools=[tool_spec("get_weather")])
    assert text_of(evts) == "Echo: call missing_tool"
    assert not [k for k, _ in evts if k == "toolUseEvent"]


def tool_events(evts: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [p for k, p in evts if k == "toolUseEvent"]


def test_tool_calls_directive_with_fragments_raw_input_and_no_stop(em: Emu) -> None:
    directive = {
        "text": "Calling.",
        "fragments": 3,
        "tool_calls": [
            {"name": "a", "input": {"q": "long enough value"}},
            {"name": "b", "raw_input": '{"path": "/tmp/trunc', "fragments": 2, "no_stop": True},
        ],
    }
    evts = ok_events(em, emu(directive))
    assert text_of(evts) == "Calling."
    tools = tool_events(evts)
    a = [t for t in tools if t["name"] == "a"]
    b = [t for t in tools if t["name"] == "b"]
    assert len(a) == 1 + 3 + 1 and a[-1]["stop"] is True
    assert orjson.loads("".join(t.get("input", "") for t in a)) == {"q": "long enough value"}
    assert len(b) == 1 + 2 and not any(t.get("stop") for t in b)
    assert "".join(t.get("input", "") for t in b) == '{"path": "/tmp/trunc'
    assert a[0]["toolUseId"] != b[0]["toolUseId"]
    kinds = [k for k, _ in evts]
    assert kinds.index("toolUseEvent") > max(
        i for i, k in enumerate(kinds) if k == "assistantResponseEvent"
    )


def test_error_directive_answers_with_that_status_and_body(em: Emu) -> None:
    body = {"message": "Encountered unexpectedly high load", "reason": None}
    r = em.chat(
        emu({"error": {"status": 503, "body": body, "type": "ServiceUnavailableException"}})
    )
    assert r.status_code == 503
    assert r.json() == body
    assert r.headers["x-amzn-errortype"] == "ServiceUnavailableException"


def test_exception_directive_ends_the_stream_with_an_exception_frame(em: Emu) -> None:
    directive = {
        "exception": {"type": "ThrottlingException", "message": "slow down", "after_events": 2}
    }
    msgs = messages(em.chat(emu(directive, "some text here")).content)
    assert len(msgs) == 3
    last = msgs[-1]
    assert last.headers[":message-type"] == "exception"
    assert last.headers[":exception-type"] == "ThrottlingException"
    assert orjson.loads(last.payload) == {"message": "slow down"}


def test_truncate_after_events_cuts_the_next_frame_in_half(em: Emu) -> None:
    raw = em.chat(emu({"truncate_after_events": 3}, "truncate me please")).content
    msgs = messages(raw)
    assert len(msgs) == 3
    whole = sum(m.prelude.total_length for m in msgs)
    assert 0 < len(raw) - whole < msgs[0].prelude.total_length


def test_split_bytes_sends_small_pieces(em: Emu) -> None:
    url = em.base + "/generateAssistantResponse"
    body = orjson.dumps(chat_body(emu({"split_bytes": 7}, "split this reply up")))
    with em.client.stream("POST", url, content=body, headers=em.auth()) as r:
        pieces = list(r.iter_raw())
    assert len(pieces) > 10 and max(len(p) for p in pieces) <= 7
    assert text_of(events(b"".join(pieces))) == "Echo: split this reply up"


def test_post_root_with_target_header_is_chat(em: Emu) -> None:
    r = em.chat("via root", path="/", headers={"x-amz-target": CHAT_TARGET})
    assert r.status_code == 200
    assert text_of(events(r.content)) == "Echo: via root"


def test_assistant_response_events_carry_the_model_id(em: Emu) -> None:
    """Real assistantResponseEvents have `modelId` beside `content` (docs/kiro-protocol.md §5.5)."""
    evts = ok_events(em, emu({"repeat_text": ["ab", "ab"]}, "hi"), model="claude-haiku-4.5")
    texts = [p for k, p in evts if k == "assistantResponseEvent"]
    assert texts and all(p["modelId"] == "claude-haiku-4.5" for p in texts)
    assert all(set(p) == {"content", "modelId"} for p in texts)


def test_the_cli_flavour_begins_with_an_initial_response_frame(em: Emu) -> None:
    """2026 kiro-cli streams (`POST /` + x-amz-target) start with `initial-response`; the IDE
    path does not (its recorded streams never had one), docs/kiro-protocol.md §5.5."""
    root = events(em.chat("hi", path="/", headers={"x-amz-target": CHAT_TARGET}).content)
    ide = events(em.chat("hi").content)
    assert root[0] == ("initial-response", {})
    assert root[1:] == ide
    assert "initial-response" not in [k for k, _ in ide]


def test_on_the_cli_flavour_faults_and_delays_count_answer_frames() -> None:
    """The initial-response goes out at once; delays, cuts and exceptions count the frames
    after it, as on the IDE path."""
    sleep = GatedSleep()
    root = {"x-amz-target": CHAT_TARGET}
    directive = {"first_delay_ms": 300, "chunks": 2, "text": "ab"}
    with running(sleep=sleep) as e:
        e.chat(emu(directive), path="/", headers=root)
        assert sleep.calls == [0.3]
        cut = e.chat(emu({"truncate_after_events": 1}, "x"), path="/", headers=root).content
        assert [k for k, _ in events(cut)] == ["initial-response", "assistantResponseEvent"]
        exc = {"exception": {"type": "ThrottlingException", "after_events": 0}}
        failed = events(e.chat(emu(exc, "x"), path="/", headers=root).content)
        assert [k for k, _ in failed] == ["initial-response", "!ThrottlingException"]


@pytest.mark.parametrize("target", [None, "AmazonCodeWhispererService.Nope"], ids=["none", "other"])
def test_post_root_without_chat_target_is_unknown_operation(em: Emu, target: str | None) -> None:
    headers = {"x-amz-target": target} if target else {}
    r = em.chat("x", path="/", headers=headers)
    assert r.status_code == 400
    assert "UnknownOperationException" in r.json()["__type"]
    assert r.headers["x-amzn-errortype"].startswith("UnknownOperationException")


def test_delays_are_slept_before_first_and_between_events() -> None:
    sleep = GatedSleep()
    with running(sleep=sleep) as e:
        e.chat(emu({"first_delay_ms": 300, "delay_ms": 50, "chunks": 3, "text": "abc"}))
    # 3 text events + metering + context: first delay, then a delay before each of the other 4
    assert sleep.calls == [0.3, 0.05, 0.05, 0.05, 0.05]


def test_frames_are_streamed_incrementally_and_streams_are_counted() -> None:
    sleep = GatedSleep(open_=False)
    directive = emu({"delay_ms": 1000, "chunks": 2, "text": "ab"})
    with running(sleep=sleep) as e:
        url, body = e.base + "/generateAssistantResponse", orjson.dumps(chat_body(directive))
        with (
            e.client.stream("POST", url, content=body, headers=e.auth()) as r1,
            e.client.stream("POST", url, content=body, headers=e.auth()) as r2,
        ):
            it1, it2 = r1.iter_raw(), r2.iter_raw()  # keep them: dropping one closes the socket
            first1, first2 = next(it1), next(it2)
            assert [p["content"] for _, p in events(first1)] == ["a"]
            assert events(first2)[0][1]["content"] == "a"
            stats = e.client.get(e.base + "/_emulator/stats").json()["accounts"]["acct-1"]
            assert stats["streams_now"] == 2
            sleep.gate.set()
            rest1, rest2 = first1 + b"".join(it1), first2 + b"".join(it2)
        stats = e.client.get(e.base + "/_emulator/stats").json()["accounts"]["acct-1"]
    assert text_of(events(rest1)) == text_of(events(rest2)) == "ab"
    assert stats["streams_max"] == 2 and stats["streams_now"] == 0


def test_echo_of_a_fresh_app_is_deterministic_per_seed() -> None:
    def tool_id(seed: int) -> str:
        with running(EmulatorConfig(seed=seed)) as e:
            r = e.chat(body=chat_body("call t", tools=[tool_spec("t")]))
            return str(tool_events(events(r.content))[0]["toolUseId"])

    assert tool_id(7) == tool_id(7)
    assert tool_id(7) != tool_id(8)


@pytest.mark.parametrize(
    "content", ["Call lookup", "now call lookup, then answer", "x\ncall  lookup"], ids=str
)
def test_call_phrase_variants_trigger_the_tool(em: Emu, content: str) -> None:
    evts = ok_events(em, content, tools=[tool_spec("lookup")])
    calls = tool_events(evts)
    assert calls[0]["name"] == "lookup" and calls[-1]["stop"] is True
    assert orjson.loads("".join(c.get("input", "") for c in calls)) == {}
