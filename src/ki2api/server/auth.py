"""Client key check: constant-time, accepts `Authorization: Bearer` and `x-api-key`."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence

from ki2api.core.errors import ErrorKind, GatewayError

__all__ = ["presented_key", "require_key"]


def presented_key(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


def require_key(headers: Mapping[str, str], keys: Sequence[str]) -> None:
    """Raise AUTHENTICATION unless a configured key was presented (every key is compared)."""
    given = presented_key(headers)
    if given is None:
        raise GatewayError(
            ErrorKind.AUTHENTICATION,
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
        )
    raw = given.encode()
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(raw, key.encode())
    if not ok:
        raise GatewayError(
            ErrorKind.AUTHENTICATION,
            "Incorrect API key provided. Use the key configured in API_KEY.",
            code="invalid_api_key",
        )
