"""A scripted, in-process `ChatTransport` (kiro/transport.py): the backend and the web search
without a socket.

Each `post` takes the next `Reply` of the script (or asks a function for it) and records what
was sent (`FakeChatTransport.posted`). A reply is a status, headers and a body given as steps:
bytes (real event-stream frames, built with the gateway's own encoder: `text_frame`,
`exception_frame`, `answer`), `Pause(s)` (the network is quiet that long), an exception (raised
where it stands, through the real `map_aiohttp_errors`, so an aiohttp exception becomes the
GatewayError the real transport would raise), or `DROP` (the connection breaks off).

`arrived()` follows the real one: the byte steps up to the next pause are "already here".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from ki2api.core.proxy import ProxyURL
from ki2api.kiro.stream.codec import encode_event, encode_exception
from ki2api.kiro.transport import map_aiohttp_errors

__all__ = [
    "DROP",
    "FakeChatTransport",
    "Pause",
    "Posted",
    "Reply",
    "Step",
    "answer",
    "bearer_invalid",
    "exception_frame",
    "http_error",
    "tail_frames",
    "text_frame",
]

MODEL = "claude-sonnet-4.5"


@dataclass(frozen=True)
class Pause:
    seconds: float


DROP = aiohttp.ClientPayloadError("Response payload is not completed")

Step = bytes | Pause | BaseException


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Sequence[Step] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    refuse: BaseException | None = None  # raised by `post` itself (no answer at all)


@dataclass(frozen=True)
class Posted:
    url: str
    body: dict[str, Any]
    headers: Mapping[str, str]
    proxy: ProxyURL | None = None  # the account's outbound proxy the call was sent through

    @property
    def token(self) -> str:
        return self.headers["authorization"].removeprefix("Bearer ")


def text_frame(text: str) -> bytes:
    return encode_event("assistantResponseEvent", orjson.dumps({"content": text, "modelId": MODEL}))


def tail_frames() -> list[bytes]:
    """The closing events of a real answer (docs/kiro-protocol.md §5)."""
    return [
        encode_event("contextUsageEvent", orjson.dumps({"contextUsagePercentage": 1.5})),
        encode_event("meteringEvent", orjson.dumps({"unit": "credit", "usage": 0.01})),
    ]


def exception_frame(kind: str = "ThrottlingException", message: str = "slow down") -> bytes:
    return encode_exception(kind, orjson.dumps({"message": message}))


def answer(*texts: str, pause_s: float = 0.0) -> Reply:
    """A complete 200 answer: one text event per text (`pause_s` between them), then the tail."""
    steps: list[Step] = []
    for i, text in enumerate(texts):
        if i and pause_s:
            steps.append(Pause(pause_s))
        steps.append(text_frame(text))
    return Reply(body=[*steps, *tail_frames()])


def http_error(status: int, message: str = "", headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, [orjson.dumps({"message": message})], dict(headers or {}))


def bearer_invalid() -> Reply:
    return http_error(403, "The bearer token included in the request is invalid.")


class FakeResponse:
    def __init__(self, reply: Reply) -> None:
        self.status = reply.status
        self.headers: Mapping[str, str] = reply.headers
        self._steps = list(reply.body)
        self.closed = False

    async def read(self) -> bytes:
        with map_aiohttp_errors():
            while self._steps:
                step = self._steps.pop(0)
                if isinstance(step, Pause):
                    await asyncio.sleep(step.seconds)
                elif isinstance(step, BaseException):
                    raise step
                elif step:
                    return step
        return b""

    async def arrived(self) -> tuple[bytes, bool]:
        data = b""
        with map_aiohttp_errors():
            while self._steps:
                step = self._steps[0]
                if isinstance(step, Pause) or (isinstance(step, BaseException) and data):
                    break
                self._steps.pop(0)
                if isinstance(step, BaseException):
                    raise step
                data += step
        return data, not self._steps

    async def aclose(self) -> None:
        self.closed = True


class FakeChatTransport:
    """`script`: the replies in order, or a function of the request that returns its reply."""

    def __init__(self, script: Iterable[Reply] | Callable[[Posted], Reply]) -> None:
        self._next: Callable[[Posted], Reply]
        if callable(script):
            self._next = script
        else:
            replies = iter(list(script))
            self._next = lambda _posted: next(replies)
        self.posted: list[Posted] = []
        self.responses: list[FakeResponse] = []
        self.closed = False

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        proxy: ProxyURL | None = None,
    ) -> FakeResponse:
        posted = Posted(url, orjson.loads(body), dict(headers), proxy)
        self.posted.append(posted)
        reply = self._next(posted)
        if reply.refuse is not None:
            with map_aiohttp_errors():
                raise reply.refuse
        response = FakeResponse(reply)
        self.responses.append(response)
        return response

    async def aclose(self) -> None:
        self.closed = True

    def tokens(self) -> list[str]:
        """The access token of each request, in order."""
        return [p.token for p in self.posted]
