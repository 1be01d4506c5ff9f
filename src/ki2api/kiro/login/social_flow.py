"""The social login (Google / GitHub through Kiro's auth service) with a local callback.

As the IDE does it (docs/kiro-protocol.md §1.4), with the redirect going to this machine:

1. a PKCE pair (`code_verifier`, its S256 `code_challenge`) and a random `state`;
2. a listener on 127.0.0.1 at a random port: `redirect_uri = http://127.0.0.1:{port}/oauth/callback`;
3. the browser goes to `{auth}/login?idp=Google|Github&redirect_uri=…&code_challenge=…
   &code_challenge_method=S256&state=…`, signs in, and is sent back to the listener with
   `code` and `state` (a `state` that does not match is refused);
4. `POST {auth}/oauth/token {code, code_verifier, redirect_uri}` -> `{accessToken,
   refreshToken, expiresIn, profileArn}`.

Whether Kiro's real auth service accepts a loopback `redirect_uri` (the IDE registers
`kiro://kiro.kiroAgent/authenticate-success`) is not known: the base URL is `KIRO_AUTH_BASE`.
The pure parts (`pkce_pair`, `challenge_of`, `login_url`, `callback_result`) have table tests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.http_client import map_transport_errors
from ki2api.kiro.login.refresh import RefreshedTokens, parse_refresh_response

__all__ = [
    "CALLBACK_PATH",
    "IDPS",
    "CallbackListener",
    "challenge_of",
    "callback_result",
    "exchange_code",
    "login_url",
    "pkce_pair",
]

CALLBACK_PATH = "/oauth/callback"
IDPS = {"google": "Google", "github": "Github"}
_WHAT = "the Kiro auth service"
_PAGE = (
    "<!doctype html><meta charset=utf-8><title>Ki2API login</title>"
    "<p>{text}</p><p>You can close this tab.</p>"
)


def challenge_of(verifier: str) -> str:
    """The S256 code challenge of a PKCE verifier (docs/kiro-protocol.md §1.4)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def pkce_pair() -> tuple[str, str]:
    """(code_verifier: 64 URL-safe characters, its S256 challenge)."""
    verifier = secrets.token_urlsafe(48)
    return verifier, challenge_of(verifier)


def login_url(auth_base: str, idp: str, redirect_uri: str, challenge: str, state: str) -> str:
    query = {
        "idp": idp,
        "redirect_uri": redirect_uri,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": state,
    }
    return f"{auth_base.rstrip('/')}/login?{urlencode(query)}"


@dataclass(frozen=True)
class CallbackResult:
    code: str | None  # None: refused, `why` says why
    why: str = ""
    ours: bool = True  # False: not this login's (wrong state): answered, and still waiting


def callback_result(target: str, state: str) -> CallbackResult | None:
    """What a request line's target at the listener means; None when it is not the callback
    (a browser's favicon request, say)."""
    parts = urlsplit(target)
    if parts.path != CALLBACK_PATH:
        return None
    query = {k: v[0] for k, v in parse_qs(parts.query).items() if v}
    if not secrets.compare_digest(query.get("state", "").encode(), state.encode()):
        return CallbackResult(None, "the callback's state does not match this login", False)
    if "error" in query:
        return CallbackResult(None, f"the login was refused ({query['error'][:80]})")
    code = query.get("code", "")
    return CallbackResult(code, "") if code else CallbackResult(None, "no code in the callback")


class CallbackListener:
    """One-shot HTTP listener on 127.0.0.1 (random port) for the login's redirect."""

    def __init__(self, state: str) -> None:
        self._state = state
        self._server: asyncio.Server | None = None
        self._result: asyncio.Future[CallbackResult] | None = None
        self.port = 0

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}{CALLBACK_PATH}"

    async def start(self) -> None:
        self._result = asyncio.get_running_loop().create_future()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def result(self, timeout: float) -> CallbackResult:
        assert self._result is not None
        try:
            return await asyncio.wait_for(asyncio.shield(self._result), timeout)
        except TimeoutError:
            return CallbackResult(None, f"no login came back within {timeout:.0f} s")

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass
            method, _, rest = line.decode("latin-1").partition(" ")
            found = (
                callback_result(rest.rsplit(" ", 1)[0], self._state) if method == "GET" else None
            )
            if found is None:
                await _answer(writer, 404, "Not the login callback.")
                return
            text = "Signed in to Kiro: Ki2API has the login." if found.code else found.why
            await _answer(writer, 200 if found.code else 400, text)
            if found.ours and self._result is not None and not self._result.done():
                self._result.set_result(found)
        except (TimeoutError, OSError, UnicodeError):
            pass
        finally:
            writer.close()


async def _answer(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    body = _PAGE.format(text=text).encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
        f"Content-Type: text/html; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    writer.write(head.encode("ascii") + body)
    await writer.drain()


async def exchange_code(
    http: httpx.AsyncClient, auth_base: str, code: str, verifier: str, redirect_uri: str
) -> RefreshedTokens:
    """The login's code for its tokens at the Kiro auth service."""
    url = f"{auth_base.rstrip('/')}/oauth/token"
    body = {"code": code, "code_verifier": verifier, "redirect_uri": redirect_uri}
    with map_transport_errors(f"{_WHAT} (login)"):
        response = await http.post(url, json=body, timeout=30.0)
    if response.status_code != 200:
        raise GatewayError(
            ErrorKind.UPSTREAM_AUTH,
            f"the social login failed: {_WHAT} answered HTTP {response.status_code} to the "
            "code exchange; run `ki2api login` again",
            upstream_status=response.status_code,
        )
    return parse_refresh_response(response.text, what=_WHAT)
