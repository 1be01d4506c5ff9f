"""Which fault (if any) a chat request meets, from its account's behaviour and fault RNG.

`decide(behaviour, rng)` is pure apart from drawing from `rng`: with `fault_rate` > 0 it draws
once per request (whether or not a behaviour flag also fires, so the random sequence depends only
on the number of requests), then picks, in this order: a behaviour HTTP error (suspended,
quota_exhausted, throttled, suspicious, credit_window, user_rate, server_error, unavailable,
high_load), a behaviour drop_connection, the random fault, then the behaviour stream faults (all
of which combine; the log names the first of empty_stream, end_without_closing, truncate,
first_event_delay, stall).

`DropConnection` is the "response" for drop_connection: it aborts the TCP connection without
sending a byte. It needs the server's transport, which `transport_of(send)` finds on uvicorn's
ASGI `send` (h11 and httptools alike); `create_app` stores it in the scope under TRANSPORT_KEY.
Without one (an in-process ASGI transport), it raises ConnectionAbortedError instead.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.responses import Response

from .behaviour import FAULT_NAMES, Behaviour
from .errors import (
    CREDIT_WINDOW,
    HIGH_LOAD,
    QUOTA_EXHAUSTED,
    SERVER_ERROR,
    SUSPENDED,
    SUSPICIOUS,
    THROTTLED,
    UNAVAILABLE,
    USER_RATE,
    Rejection,
)
from .stream import NO_FAULTS, StreamFaults

__all__ = [
    "TRANSPORT_KEY",
    "Decision",
    "DropConnection",
    "decide",
    "transport_of",
]

TRANSPORT_KEY = "kiro_emulator.transport"
RANDOM_EVENTS_MAX = 3  # a random truncate / stall happens after 0..3 frames

# behaviour flag / fault name -> the HTTP error it answers with, in the order they are checked
_HTTP_ERRORS: dict[str, Rejection] = {
    "suspended": SUSPENDED,
    "quota_exhausted": QUOTA_EXHAUSTED,
    "throttled": THROTTLED,
    "suspicious": SUSPICIOUS,  # the trouble signs (docs/emulator.md); never drawn at random
    "credit_window": CREDIT_WINDOW,
    "user_rate": USER_RATE,
    "server_error": SERVER_ERROR,
    "unavailable": UNAVAILABLE,
    "high_load": HIGH_LOAD,
}


@dataclass(frozen=True)
class Decision:
    name: str | None = None  # the fault that fired (request log `fault`), None when none did
    rejection: Rejection | None = None  # answer with this HTTP error
    drop: bool = False  # abort the connection without a response
    stream: StreamFaults = field(default=NO_FAULTS)


@dataclass(frozen=True)
class _Drawn:
    name: str
    events: int  # for truncate / stall


def _draw(b: Behaviour, rng: random.Random) -> _Drawn | None:
    if b.fault_rate <= 0 or rng.random() >= b.fault_rate:
        return None
    name = rng.choice(b.faults or FAULT_NAMES)
    return _Drawn(name, rng.randint(0, RANDOM_EVENTS_MAX))


def _http_error(name: str, b: Behaviour) -> Rejection:
    rejection = _HTTP_ERRORS[name].because(f"fault {name}")
    if rejection.status == 429 and b.retry_after_s is not None:
        return rejection.with_headers({"Retry-After": str(b.retry_after_s)})
    return rejection


def _stream_faults(b: Behaviour, drawn: _Drawn | None) -> tuple[str | None, StreamFaults]:
    """The behaviour's stream faults plus a drawn one, and the name to log."""
    d = drawn.name if drawn else ""
    delay_s = b.fault_delay_ms / 1000
    stall = b.stall_after_events
    stall_after, stall_s = (stall.events, stall.ms / 1000) if stall else (None, 0.0)
    if d == "stall":
        stall_after, stall_s = drawn.events if drawn else 0, delay_s
    faults = StreamFaults(
        empty=b.empty_stream or d == "empty_stream",
        no_tail=b.end_without_closing or d == "end_without_closing",
        truncate_after=drawn.events if drawn and d == "truncate" else b.truncate_after_events,
        first_delay_s=delay_s if d == "first_event_delay" else b.first_event_delay_ms / 1000,
        stall_after=stall_after,
        stall_s=stall_s,
    )
    fired = [
        ("empty_stream", faults.empty),
        ("end_without_closing", faults.no_tail),
        ("truncate", faults.truncate_after is not None),
        ("first_event_delay", faults.first_delay_s > 0),
        ("stall", faults.stall_after is not None),
    ]
    return (d or next((n for n, on in fired if on), None)), faults


def decide(b: Behaviour, rng: random.Random) -> Decision:
    """The fault this request meets (see the module docstring for the order)."""
    drawn = _draw(b, rng)
    for flag in _HTTP_ERRORS:
        if getattr(b, flag):
            return Decision(flag, _http_error(flag, b))
    if b.drop_connection:
        return Decision("drop_connection", drop=True)
    if drawn and drawn.name in _HTTP_ERRORS:
        return Decision(drawn.name, _http_error(drawn.name, b))
    if drawn and drawn.name == "drop_connection":
        return Decision("drop_connection", drop=True)
    name, stream = _stream_faults(b, drawn)
    return Decision(name, stream=stream)


class _Abortable(Protocol):
    def abort(self) -> None: ...


def transport_of(send: Any) -> _Abortable | None:
    """The asyncio transport behind uvicorn's ASGI `send` (a bound method of its request
    cycle, which keeps the connection's transport), or None under another server."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    return transport if callable(getattr(transport, "abort", None)) else None


class DropConnection(Response):
    """Abort the TCP connection: the client gets no status line, only a closed socket."""

    def __init__(self) -> None:
        super().__init__(b"", status_code=500)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        transport = scope.get(TRANSPORT_KEY)
        if transport is None:
            raise ConnectionAbortedError("drop_connection: no transport to abort")
        transport.abort()
        for _ in range(3):  # let the server see the connection lost before the app returns
            await asyncio.sleep(0)
