"""kiro.events on the stream shape of real 2026 Kiro (docs/kiro-protocol.md): an
`initial-response` frame first (kiro-cli flavour), `modelId` beside `content`, and
`contextUsageEvent` before `meteringEvent`. The bytes are the emulator's own."""

from __future__ import annotations

from ki2api.core.events import Event, MessageStop, TextDelta, Usage
from ki2api.kiro.stream.codec import decode_all
from ki2api.kiro.stream.translate import KiroStreamTranslator
from kiro_emulator.script import Directives, parse_directives, plan_reply
from kiro_emulator.stream import build_plan


def emulator_bytes(initial_response: bool) -> bytes:
    directives, content = parse_directives("hello there")
    assert isinstance(directives, Directives)
    reply = plan_reply(content, {}, directives, lambda: "tooluse_x")
    plan = build_plan(
        reply, directives, "claude-sonnet-4.5", 400, initial_response=initial_response
    )
    return b"".join(plan.frames)


def translate(raw: bytes) -> list[Event]:
    t = KiroStreamTranslator(input_tokens=100)
    out: list[Event] = []
    for frame in decode_all(raw):
        out += t.feed(frame)
    return out + t.finish()


def test_initial_response_frame_is_ignored_without_error() -> None:
    cli, ide = emulator_bytes(True), emulator_bytes(False)
    frames = decode_all(cli)
    assert frames[0].event_type == "initial-response"
    assert [f.event_type for f in frames[-2:]] == ["contextUsageEvent", "meteringEvent"]
    assert translate(cli) == translate(ide)
    events = translate(cli)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Echo: hello there"
    assert isinstance(events[-1], MessageStop) and events[-1].reason == "end_turn"
    assert any(isinstance(e, Usage) for e in events)
