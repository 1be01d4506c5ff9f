"""Client keys: which key a request presents, checked in constant time. The one parser that both
authentication (the routes) and accounting (the usage row's `client_key`) use.

A request may carry a key in `Authorization: Bearer <key>` (OpenAI clients, Anthropic's
`auth_token`) and in `x-api-key` (Anthropic clients). It is authenticated when either of them
is a configured key; Bearer is looked at first. A client that sends both (Claude Code with both
ANTHROPIC_API_KEY and ANTHROPIC_AUTH_TOKEN set) is served when one of them is the gateway's
key, and the usage row names that key (`key-N`), never the other. A request with no valid key
is logged as `invalid:<hash>` of the first key it presented, or `none`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import Scope

from ki2api.core.errors import ErrorKind, GatewayError

__all__ = ["ClientKey", "identify", "identity", "presented_keys", "require_key"]


@dataclass(frozen=True, slots=True)
class ClientKey:
    """Which configured key (1-based `index`) a request presented; `first` is the first key it
    presented at all (for the fingerprint of an invalid one). Never printed: `repr` hides it."""

    index: int | None
    first: bytes | None

    def __repr__(self) -> str:
        return f"ClientKey(index={self.index})"

    @property
    def fingerprint(self) -> str:
        """`key-N`, `invalid:<8 hex of sha256>` or `none`: what the usage log records."""
        if self.index is not None:
            return f"key-{self.index}"
        if self.first is None:
            return "none"
        return "invalid:" + hashlib.sha256(self.first).hexdigest()[:8]


def presented_keys(headers: Mapping[str, str]) -> tuple[bytes, ...]:
    """The keys a request presents, Bearer first, as the bytes that arrived (latin-1)."""
    found: list[bytes] = []
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            found.append(value.strip().encode("latin-1"))
    key = headers.get("x-api-key")
    if key and key.strip():
        found.append(key.strip().encode("latin-1"))
    return tuple(found)


def identify(headers: Mapping[str, str], keys: Sequence[str]) -> ClientKey:
    """Which configured key the request presents. Every candidate is compared with every key
    in constant time (the time does not tell which key, or how much of one, matched)."""
    candidates = presented_keys(headers)
    index: int | None = None
    for given in candidates:
        for i, key in enumerate(keys, 1):
            if hmac.compare_digest(given, key.encode("latin-1", "replace")) and index is None:
                index = i
    return ClientKey(index, candidates[0] if candidates else None)


def identity(scope: Scope, keys: Sequence[str]) -> ClientKey:
    """`identify` for the request in `scope`, worked out once per request: the client-key
    middleware, the usage row and the route all ask (kept in `scope["state"]`)."""
    state = scope.setdefault("state", {})
    found = state.get("identity")
    if not isinstance(found, ClientKey):
        found = state["identity"] = identify(Headers(scope=scope), keys)
    return found


def require_key(client: ClientKey) -> None:
    """Raise AUTHENTICATION unless the request presented a configured key."""
    if client.index is not None:
        return
    if client.first is None:
        raise GatewayError(
            ErrorKind.AUTHENTICATION,
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' "
            "or 'x-api-key: <key>'.",
        )
    raise GatewayError(
        ErrorKind.AUTHENTICATION,
        "Incorrect API key provided. Use the key configured in API_KEY.",
        code="invalid_api_key",
    )
