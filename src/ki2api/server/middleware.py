"""Request ids (a client's own kept when fit to echo) and the request body size limit, as
`server/front_door.py` applies them."""

from __future__ import annotations

import re

from starlette.types import Message, Receive, Scope

from ki2api.core.errors import ErrorKind, GatewayError

__all__ = ["body_limit", "given_request_id"]

_PRINTABLE_ID = re.compile(rb"[\x20-\x7e]{1,128}")


def given_request_id(scope: Scope) -> str | None:
    """The client's `x-request-id`, if it is fit to echo and log."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            value = value.strip()
            return value.decode() if _PRINTABLE_ID.fullmatch(value) else None
    return None


def body_limit(declared: bytes | None, receive: Receive, max_bytes: int) -> Receive | GatewayError:
    """The refusal of a body declared (`Content-Length`) over `max_bytes`, else `receive`
    counting what streams in and raising that refusal once more than `max_bytes` arrived."""
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        return _too_large(max_bytes)
    return _CountingReceive(receive, max_bytes)


class _CountingReceive:
    """`receive`, raising the body limit's refusal once more than `max_bytes` came in (a
    slotted object: it is held for a stream's life, a closure and its cells weigh more)."""

    __slots__ = ("max_bytes", "receive", "seen")

    def __init__(self, receive: Receive, max_bytes: int) -> None:
        self.receive = receive
        self.max_bytes = max_bytes
        self.seen = 0

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.max_bytes:
                raise _too_large(self.max_bytes)
        return message


def _too_large(max_bytes: int) -> GatewayError:
    return GatewayError(
        ErrorKind.REQUEST_TOO_LARGE,
        f"Request body is larger than the limit of {max_bytes} bytes (KI2API_MAX_BODY_BYTES).",
    )
