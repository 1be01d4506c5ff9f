"""One Kiro call with the account's token, renewed once if Kiro calls it invalid.

Kiro may refuse an access token before its stated expiry ("bearer token invalid":
`classify.is_bearer_invalid`; docs/kiro-protocol.md §2.4). The chat call (kiro/backend.py) and
the web search (kiro/mcp.py) then do the same thing, written here once: force one refresh of
the login (single-flight: concurrent callers share it, `KiroCredentials.refresh`) and retry once
on the same account. What the second answer says is the caller's to classify.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from ki2api.kiro.classify import is_bearer_invalid
from ki2api.kiro.login.credentials import AuthSnapshot, KiroCredentials

__all__ = ["call_with_fresh_token"]

T = TypeVar("T")


async def call_with_fresh_token(
    credentials: KiroCredentials,
    call: Callable[[AuthSnapshot], Awaitable[T]],
    answer: Callable[[T], tuple[int, bytes]],
) -> T:
    """`call(auth)` with the current token; when its answer (`answer(result)`: the HTTP status
    and the error body read so far) says the bearer token is invalid, `call` again once with a
    freshly refreshed token. A failed refresh raises its own GatewayError."""
    auth = await credentials.current()
    result = await call(auth)
    if is_bearer_invalid(*answer(result)):
        auth = await credentials.refresh(stale=auth.access_token)
        result = await call(auth)
    return result
