"""Kiro's web search: `POST {api_base}/mcp`, a JSON-RPC 2.0 `tools/call` of `web_search`
(docs/kiro-protocol.md §3.11).

Request: ``{"id", "jsonrpc": "2.0", "method": "tools/call", "params": {"name": "web_search",
"arguments": {"query": …}}}`` with the IDE headers and ``x-amzn-kiro-profile-arn`` when the
login has a profile. Answer: ``{"result": {"content": [{"type": "text", "text": "<JSON>"}],
"isError": false}}`` where the inner JSON is ``{"results": [{"title", "url", "snippet",
"publishedDate" (epoch ms), "id", "domain", …}], "totalResults", "query", "error"}``, or a
JSON-RPC ``{"error": {"code", "message"}}``.

Which client request is a web search is the frontend's to say (Claude Code's sub-request:
`frontends/anthropic/websearch.py`); this module only runs the search.

The call goes over the chat call's transport (`ChatTransport`, the aiohttp session in a running
gateway): same host as the chat, so it reuses its warm keep-alive connections, proxy settings
and error mapping.
"""

from __future__ import annotations

import secrets
import string
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.proxy import ProxyURL
from ki2api.core.search_results import WebSearchResult
from ki2api.kiro.accounts.pool import AccountPool
from ki2api.kiro.accounts.slots import queued
from ki2api.kiro.classify import classify_http_error
from ki2api.kiro.endpoint import api_base, chat_headers, chat_region, machine_id
from ki2api.kiro.fresh_token import call_with_fresh_token
from ki2api.kiro.login.credentials import AuthSnapshot, KiroCredentials
from ki2api.kiro.transport import ChatTransport, read_body

__all__ = [
    "KiroWebSearch",
    "build_mcp_request",
    "mcp_headers",
    "new_mcp_request_id",
    "parse_mcp_response",
    "web_search",
]

_MAX_BODY = 2 * 1024 * 1024
_ALNUM = string.ascii_letters + string.digits
_LOWER_ALNUM = string.ascii_lowercase + string.digits


# request ----------------------------------------------------------------------------------------
def new_mcp_request_id(now_ms: int | None = None) -> str:
    """The IDE's id form: ``web_search_tooluse_{22 alnum}_{epoch ms}_{8 lower alnum}``."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    head = "".join(secrets.choice(_ALNUM) for _ in range(22))
    tail = "".join(secrets.choice(_LOWER_ALNUM) for _ in range(8))
    return f"web_search_tooluse_{head}_{ms}_{tail}"


def build_mcp_request(query: str, *, request_id: str) -> dict[str, Any]:
    return {
        "id": request_id,
        "jsonrpc": "2.0",
        "method": "tools/call",
        "params": {"name": "web_search", "arguments": {"query": query}},
    }


def mcp_headers(
    auth: AuthSnapshot, *, invocation_id: str, profile_arn: str | None = None
) -> dict[str, str]:
    """The chat call's IDE headers plus ``x-amzn-kiro-profile-arn`` (the login's profile, else
    the configured one; omitted when there is none, e.g. an IdC login without KIRO_PROFILE_ARN)."""
    headers = chat_headers(
        auth.access_token,
        machine=auth.machine_id or machine_id(auth.account_id),
        invocation_id=invocation_id,
    )
    arn = auth.profile_arn or profile_arn
    if arn:
        headers["x-amzn-kiro-profile-arn"] = arn
    return headers


# response ---------------------------------------------------------------------------------------
def _protocol(what: str) -> GatewayError:
    return GatewayError(
        ErrorKind.UPSTREAM_PROTOCOL, f"Kiro's web search answered {what}", retryable=True
    )


def _failed(message: str) -> GatewayError:
    text = " ".join(message.split())[:300] or "no detail"
    return GatewayError(ErrorKind.UPSTREAM_ERROR, f"Kiro's web search failed: {text}")


def _rpc_error(error: Any) -> GatewayError:
    if not isinstance(error, Mapping):
        return _failed(str(error))
    message = error.get("message")
    code = error.get("code")
    detail = message if isinstance(message, str) else "no message"
    return _failed(f"{detail} (JSON-RPC {code})" if isinstance(code, int) else detail)


def _first_text(result: Mapping[str, Any]) -> str | None:
    content = result.get("content")
    if not isinstance(content, list):
        raise _protocol("a result without a content list")
    for item in content:
        if isinstance(item, Mapping) and item.get("type") == "text":
            text = item.get("text")
            if not isinstance(text, str):
                raise _protocol("a text content without text")
            return text
    return None


def _page_age(published: Any) -> str | None:
    if isinstance(published, bool) or not isinstance(published, int | float):
        return None
    try:
        when = datetime.fromtimestamp(published / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return f"{when:%B} {when.day}, {when.year}"


def _hit(raw: Any) -> WebSearchResult | None:
    if not isinstance(raw, Mapping):
        return None
    url, title, snippet = raw.get("url"), raw.get("title"), raw.get("snippet")
    if not isinstance(url, str) or not url.strip():
        return None
    return WebSearchResult(
        url=url,
        title=title if isinstance(title, str) else "",
        snippet=snippet if isinstance(snippet, str) else None,
        page_age=_page_age(raw.get("publishedDate")),
    )


def _results(text: str) -> list[WebSearchResult]:
    try:
        payload = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise _protocol("results that are not JSON") from None
    if not isinstance(payload, Mapping):
        raise _protocol("results that are not a JSON object")
    error = payload.get("error")
    if isinstance(error, str) and error.strip():
        raise _failed(error)
    hits = payload.get("results")
    if hits is None:
        return []
    if not isinstance(hits, list):
        raise _protocol("a results field that is not a list")
    return [hit for hit in map(_hit, hits) if hit is not None]


def parse_mcp_response(body: bytes) -> list[WebSearchResult]:
    """The hits of a 200 answer (entries without a URL are skipped); GatewayError for a JSON-RPC
    error or a failed tool call (UPSTREAM_ERROR) and for a malformed answer (UPSTREAM_PROTOCOL)."""
    try:
        envelope = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _protocol("with something that is not JSON") from None
    if not isinstance(envelope, Mapping):
        raise _protocol("with JSON that is not an object")
    if envelope.get("error") is not None:
        raise _rpc_error(envelope["error"])
    result = envelope.get("result")
    if not isinstance(result, Mapping):
        raise _protocol("without a result")
    text = _first_text(result)
    if result.get("isError") is True:
        raise _failed(text or "the tool reported an error")
    return [] if text is None else _results(text)


# calls ------------------------------------------------------------------------------------------
async def _exchange(
    chat: ChatTransport,
    url: str,
    payload: bytes,
    headers: Mapping[str, str],
    proxy: ProxyURL | None = None,
) -> tuple[int, bytes, Mapping[str, str]]:
    """POST (through the account's proxy, if any) and read the whole (bounded) body."""
    response = await chat.post(url, payload, headers, proxy)
    body, more = await read_body(response, _MAX_BODY)
    if more:
        raise _protocol(f"with more than {_MAX_BODY} bytes")
    return response.status, body, response.headers


async def web_search(
    chat: ChatTransport,
    api_base: str,
    auth: AuthSnapshot,
    query: str,
    *,
    profile_arn: str | None = None,
    request_id: str | None = None,
    invocation_id: str | None = None,
) -> list[WebSearchResult]:
    """One search with the given token (no refresh). Upstream HTTP errors are classified by
    `classify_http_error`; network failures are mapped by `ChatTransport`."""
    status, body, headers = await _exchange(
        chat,
        f"{api_base.rstrip('/')}/mcp",
        orjson.dumps(build_mcp_request(query, request_id=request_id or new_mcp_request_id())),
        mcp_headers(
            auth, invocation_id=invocation_id or str(uuid.uuid4()), profile_arn=profile_arn
        ),
    )
    if status != 200:
        raise classify_http_error(status, body, headers)
    return parse_mcp_response(body)


class KiroWebSearch:
    """`search(query)` on an account of the pool, refreshing its token once (single-flight)
    when Kiro calls it invalid, as the chat call does (kiro/fresh_token.py). A failure counts
    against the account (cooldown, quota) but is not retried elsewhere: Claude Code reports a
    failed search itself."""

    def __init__(
        self,
        chat: ChatTransport,
        pool: AccountPool,
        *,
        api_base: str,
        profile_arn: str | None = None,
        region: str | None = None,
        id_factory: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._chat = chat
        self._pool = pool
        self._api_base = api_base  # may hold `{region}` (kiro/endpoint.py)
        self._region = region
        self._profile_arn = profile_arn
        self._new_id = id_factory

    async def _attempt(
        self, auth: AuthSnapshot, payload: bytes
    ) -> tuple[int, bytes, Mapping[str, str]]:
        headers = mcp_headers(auth, invocation_id=self._new_id(), profile_arn=self._profile_arn)
        region = chat_region(
            profile_arn=auth.profile_arn or self._profile_arn,
            login_region=auth.region,
            override=self._region,
        )
        url = f"{api_base(self._api_base, region)}/mcp"
        proxy = self._pool.proxy_of(auth.account_id)
        return await _exchange(self._chat, url, payload, headers, proxy)

    async def search(self, query: str) -> list[WebSearchResult]:
        pool = self._pool  # every account at its cap: wait in line (kiro/accounts/slots.py)
        account = await queued(
            pool.slots, lambda: pool.acquire(None, ()), lambda: pool.accounts, pool.offers
        )
        if account is None:
            raise self._pool.unavailable(None)
        try:
            return await self._search(account.credentials, query)
        except GatewayError as err:
            await self._pool.failed(account, err)
            raise
        finally:
            self._pool.release(account)

    async def _search(self, credentials: KiroCredentials, query: str) -> list[WebSearchResult]:
        payload = orjson.dumps(build_mcp_request(query, request_id=new_mcp_request_id()))
        status, body, headers = await call_with_fresh_token(
            credentials,
            lambda auth: self._attempt(auth, payload),
            lambda answer: (answer[0], answer[1]),
        )
        if status != 200:
            raise classify_http_error(status, body, headers)
        return parse_mcp_response(body)
