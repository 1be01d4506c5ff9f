"""The console's sign-in: a stateless signed cookie, its CSRF token, and the login throttle.

Pure (no I/O): every worker of `serve --workers N` derives the same signing key from ADMIN_KEY,
so a cookie one worker issued is accepted by the others, and changing ADMIN_KEY signs everyone
out. The cookie value is `b64url(expires_at:nonce) + "." + b64url(HMAC-SHA256(k, payload))` with
`k = HMAC-SHA256(ADMIN_KEY, "ki2api console session")`; the CSRF token of a session is
`b64url(HMAC-SHA256(k, "csrf:" + nonce))`. The throttle counts failed sign-ins per client
address (per worker): more than `max_failures` within `window_s` and the address waits.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass

__all__ = [
    "COOKIE_NAME",
    "SESSION_S",
    "LoginThrottle",
    "Session",
    "check_admin_key",
    "csrf_matches",
    "is_console_path",
    "issue_session",
    "same_origin",
    "verify_session",
]

COOKIE_NAME = "ki2api_console"
SESSION_S = 43_200  # 12 hours
_MAX_COOKIE = 512
_MAX_KEY = 4096


def is_console_path(path: str) -> bool:
    """The console's paths: not the client API (no client key, no usage row, no metrics)."""
    return path in ("/", "/ui") or path.startswith("/ui/")


@dataclass(frozen=True)
class Session:
    expires_at: int
    nonce: str
    cookie: str
    csrf: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(admin_key: str) -> bytes:
    return hmac.new(admin_key.encode(), b"ki2api console session", hashlib.sha256).digest()


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _session(key: bytes, expires_at: int, nonce: str) -> Session:
    payload = f"{expires_at}:{nonce}".encode()
    cookie = _b64(payload) + "." + _b64(_mac(key, payload))
    csrf = _b64(_mac(key, b"csrf:" + nonce.encode()))
    return Session(expires_at, nonce, cookie, csrf)


def issue_session(
    admin_key: str, now: float, *, ttl_s: int = SESSION_S, nonce: str | None = None
) -> Session:
    """A new session valid for `ttl_s` from `now`."""
    return _session(_key(admin_key), int(now) + ttl_s, nonce or secrets.token_urlsafe(18))


def verify_session(admin_key: str, cookie: str | None, now: float) -> Session | None:
    """The session a cookie value carries, or None when it is missing, forged or expired."""
    if not cookie or len(cookie) > _MAX_COOKIE or cookie.count(".") != 1:
        return None
    body, _, mac = cookie.partition(".")
    try:
        payload, given = _unb64(body), _unb64(mac)
        expires_raw, _, nonce = payload.decode("ascii").partition(":")
        expires_at = int(expires_raw)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    key = _key(admin_key)
    if not nonce or not hmac.compare_digest(given, _mac(key, payload)):
        return None
    if expires_at <= now:
        return None
    return _session(key, expires_at, nonce)


def check_admin_key(admin_key: str, given: object) -> bool:
    """Is `given` the admin key (constant time)?"""
    if not isinstance(given, str) or not given or len(given) > _MAX_KEY:
        return False
    return hmac.compare_digest(given.encode(), admin_key.encode())


def csrf_matches(session: Session, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), session.csrf.encode())


def same_origin(
    origin: str | None, sec_fetch_site: str | None, host: str | None, https: bool
) -> bool:
    """False for a cross-site request: `sec-fetch-site: cross-site`, or an `Origin` that is not
    the request's own (`http(s)://<Host>`). No Origin at all (curl, old browsers) is allowed:
    the CSRF header is the defence there."""
    if (sec_fetch_site or "").strip().lower() == "cross-site":
        return False
    if origin is None:
        return True
    if not host:
        return False
    own = {f"https://{host}"} if https else {f"http://{host}", f"https://{host}"}
    return origin.strip().lower().rstrip("/") in {o.lower() for o in own}


class LoginThrottle:
    """Failed sign-ins per client address: more than `max_failures` within `window_s` → wait."""

    def __init__(
        self, *, max_failures: int = 5, window_s: float = 60.0, max_clients: int = 10_000
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._max_clients = max_clients
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def _recent(self, client: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(client, ()) if now - t < self.window_s]
        if times:
            self._failures[client] = times
        else:
            self._failures.pop(client, None)
        return times

    def retry_after(self, client: str, now: float) -> float | None:
        """Seconds the client must wait before it may try again, or None when it may now."""
        times = self._recent(client, now)
        if len(times) < self.max_failures:
            return None
        return max(1.0, round(times[-self.max_failures] + self.window_s - now, 1))

    def failed(self, client: str, now: float) -> None:
        times = self._recent(client, now)
        times.append(now)
        self._failures[client] = times[-self.max_failures - 1 :]
        self._failures.move_to_end(client)
        while len(self._failures) > self._max_clients:
            self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)
