"""Shared helpers for the emulator tests (imported by the other test_emulator_* modules).

Responses are decoded with botocore's EventStreamBuffer, independent of our own decoder.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from botocore.eventstream import EventStreamBuffer, EventStreamMessage
from starlette.applications import Starlette

from kiro_emulator import EmulatorConfig, EmulatorState, create_app
from tests.support.servers import serve_in_thread

SOCIAL_ARN = "arn:aws:codewhisperer:us-east-1:699475941385:profile/EHGA3GRVQMUK"
CHAT_TARGET = "AmazonCodeWhispererStreamingService.GenerateAssistantResponse"
BEARER_BODY = {"message": "The bearer token included in the request is invalid.", "reason": None}
VALIDATION_TYPE = "com.amazon.kiro.runtimeservice#ValidationException"  # real 400s, 10.2
IMPROPER_BODY = {"__type": VALIDATION_TYPE, "message": "Improperly formed request.", "reason": None}


class Clock:
    """A settable epoch clock."""

    def __init__(self, now: float = 1_767_225_600.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class GatedSleep:
    """Records every sleep; each sleep waits until `gate` is set (set it for plain recording)."""

    def __init__(self, open_: bool = True) -> None:
        self.calls: list[float] = []
        self.gate = threading.Event()
        if open_:
            self.gate.set()

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        while not self.gate.is_set():
            await asyncio.sleep(0.005)
        await asyncio.sleep(0)


@dataclass
class Emu:
    base: str
    app: Starlette
    client: httpx.Client
    clock: Clock
    sleep: GatedSleep
    state: EmulatorState = field(init=False)

    def __post_init__(self) -> None:
        self.state = self.app.state.emulator

    def token(self, account: str = "acct-1") -> str:
        return self.state.accounts[account].access_token

    def auth(self, account: str = "acct-1") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(account)}"}

    def chat(
        self,
        content: str = "hello",
        *,
        body: dict[str, Any] | None = None,
        account: str = "acct-1",
        path: str = "/generateAssistantResponse",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        payload = body if body is not None else chat_body(content)
        hdrs = {**self.auth(account), **(headers or {})}
        return self.client.post(self.base + path, content=orjson.dumps(payload), headers=hdrs)


@contextmanager
def running(config: EmulatorConfig | None = None, sleep: GatedSleep | None = None) -> Iterator[Emu]:
    clock, gated = Clock(), sleep or GatedSleep()
    app = create_app(config or EmulatorConfig(), clock=clock, sleep=gated)
    with serve_in_thread(app) as base, httpx.Client(timeout=30) as client:
        yield Emu(base, app, client, clock, gated)


def tool_spec(name: str, schema: dict[str, Any] | None = None, desc: str = "A tool.") -> dict:
    schema = schema if schema is not None else {"type": "object", "properties": {}}
    return {
        "toolSpecification": {"name": name, "description": desc, "inputSchema": {"json": schema}}
    }


def chat_body(
    content: str = "hello",
    *,
    model: str | None = "claude-sonnet-4.5",
    history: list[dict[str, Any]] | None = None,
    tools: list[dict[str, Any]] | None = None,
    tool_results: list[dict[str, Any]] | None = None,
    profile_arn: str | None = SOCIAL_ARN,
) -> dict[str, Any]:
    msg: dict[str, Any] = {"content": content, "origin": "AI_EDITOR"}
    if model is not None:
        msg["modelId"] = model
    ctx: dict[str, Any] = {}
    if tools is not None:
        ctx["tools"] = tools
    if tool_results is not None:
        ctx["toolResults"] = tool_results
    if ctx:
        msg["userInputMessageContext"] = ctx
    state: dict[str, Any] = {
        "chatTriggerType": "MANUAL",
        "conversationId": "6b1e1b36-2d5c-4a55-9f38-1c3a4d5e6f70",
        "currentMessage": {"userInputMessage": msg},
        "history": copy.deepcopy(history or []),
    }
    body: dict[str, Any] = {"conversationState": state}
    if profile_arn is not None:
        body["profileArn"] = profile_arn
    return body


def emu(directive: dict[str, Any], text: str = "") -> str:
    return f"{text}<emu>{orjson.dumps(directive).decode()}</emu>"


def messages(raw: bytes) -> list[EventStreamMessage]:
    buf = EventStreamBuffer()
    buf.add_data(raw)
    return list(buf)


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event type or `!ExceptionType`, payload) for every whole frame."""
    out = []
    for m in messages(raw):
        kind = m.headers.get(":event-type") or "!" + m.headers[":exception-type"]
        out.append((kind, orjson.loads(m.payload)))
    return out


def text_of(evts: list[tuple[str, dict[str, Any]]]) -> str:
    return "".join(p["content"] for k, p in evts if k == "assistantResponseEvent")


def test_kit_decodes_the_documented_example_frame() -> None:
    """docs/kiro-protocol.md §5.4's verified frame, so the kit's decoding is itself checked."""
    raw = bytes.fromhex(
        "0000007c0000005c3bddcf780b3a6576656e742d74797065070016617373697374616e74526573706f6e7365"
        "4576656e740d3a636f6e74656e742d747970650700106170706c69636174696f6e2f6a736f6e0d3a6d657373"
        "6167652d747970650700056576656e747b22636f6e74656e74223a224869227db02babdc"
    )
    assert events(raw) == [("assistantResponseEvent", {"content": "Hi"})]
