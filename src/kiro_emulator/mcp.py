"""`POST /mcp`: Kiro's web search, JSON-RPC 2.0 `tools/call` of `web_search`
(docs/kiro-protocol.md §3.11).

Auth and account faults are the chat call's (403 bearer invalid, suspended, quota, throttled),
and social accounts must send `x-amzn-kiro-profile-arn`. Then:

* a body that is not a JSON object -> HTTP 400, JSON-RPC -32700 (parse error);
* no ``jsonrpc: "2.0"`` or no string ``method`` -> HTTP 400, -32600 (invalid request);
* another method -> 200, -32601; another tool or no non-empty string query -> 200, -32602;
* a query containing ``<emu-fail>`` -> 200, -32603 (a scripted search failure);
* else 200 with three results derived from the query only (same query, same answer).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .common import bearer, emulator, json_object, request_id_headers
from .errors import (
    BEARER_INVALID,
    PROFILE_ARN_REQUIRED,
    QUOTA_EXHAUSTED,
    SUSPENDED,
    THROTTLED,
    Rejection,
    json_response,
)
from .profiles import check_profile
from .reqlog import record
from .state import Account

__all__ = ["FAIL_MARKER", "mcp", "search_results"]

FAIL_MARKER = "<emu-fail>"
_PUBLISHED_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
_DAY_MS = 86_400_000
_DOMAINS = ("example.com", "example.org", "example.net")


class _RpcError(Exception):
    def __init__(self, code: int, message: str, status: int = 200) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def search_results(query: str) -> dict[str, Any]:
    """The inner JSON of a successful search: three hits derived from `query` alone."""
    digest = hashlib.sha256(query.encode()).hexdigest()[:12]
    slug = re.sub(r"[^a-z0-9]+", "-", query.lower()).strip("-")[:60] or "query"
    hits = [
        {
            "title": f"{query} - result {n}",
            "url": f"https://www.{domain}/{slug}/{n}",
            "snippet": f'Result {n} of the emulated web search for "{query}".',
            "publishedDate": _PUBLISHED_MS - n * _DAY_MS,
            "id": f"emu-{digest}-{n}",
            "domain": f"www.{domain}",
            "maxVerbatimWordLimit": 25,
            "publicDomain": False,
        }
        for n, domain in enumerate(_DOMAINS, 1)
    ]
    return {"results": hits, "totalResults": len(hits), "query": query, "error": None}


def _check_account(request: Request, account: Account | None) -> None:
    if account is None:
        raise BEARER_INVALID.because("missing, unknown or expired bearer token")
    b = account.behaviour
    if b.suspended:
        raise SUSPENDED.because("behaviour suspended")
    if b.quota_exhausted:
        raise QUOTA_EXHAUSTED.because("behaviour quota_exhausted")
    if b.throttled:
        raise THROTTLED.because("behaviour throttled")
    if account.auth_method == "social" and not request.headers.get("x-amzn-kiro-profile-arn"):
        raise PROFILE_ARN_REQUIRED.because("social accounts must send x-amzn-kiro-profile-arn")
    check_profile(account, request.headers.get("x-amzn-kiro-profile-arn"))


def _query(body: dict[str, Any]) -> str:
    if body.get("jsonrpc") != "2.0" or not isinstance(body.get("method"), str):
        raise _RpcError(-32600, "Invalid Request", 400)
    if body["method"] != "tools/call":
        raise _RpcError(-32601, f"Method not found: {body['method']}")
    params = body.get("params")
    if not isinstance(params, dict) or params.get("name") != "web_search":
        name = params.get("name") if isinstance(params, dict) else None
        raise _RpcError(-32602, f"Unknown tool: {name}")
    arguments = params.get("arguments")
    query = arguments.get("query") if isinstance(arguments, dict) else None
    if not isinstance(query, str) or not query.strip():
        raise _RpcError(-32602, "Invalid params: arguments.query must be a non-empty string")
    if FAIL_MARKER in query:
        raise _RpcError(-32603, "Internal error: the web search failed (emulated)")
    return query


def _answer(raw: bytes) -> tuple[int, dict[str, Any]]:
    body = json_object(raw)
    request_id = body.get("id") if body is not None else None
    try:
        if body is None:
            raise _RpcError(-32700, "Parse error", 400)
        query = _query(body)
    except _RpcError as e:
        error = {"code": e.code, "message": e.message}
        return e.status, {"jsonrpc": "2.0", "id": request_id, "error": error}
    text = orjson.dumps(search_results(query)).decode()
    result = {"content": [{"type": "text", "text": text}], "isError": False}
    return 200, {"jsonrpc": "2.0", "id": request_id, "result": result}


async def mcp(request: Request) -> Response:
    state = emulator(request)
    raw = await request.body()
    account = state.authenticate(bearer(request))
    entry = record(state, request, raw, account)
    headers = request_id_headers(state)
    try:
        _check_account(request, account)
    except Rejection as r:
        return r.logged(entry, headers)
    status, answer = _answer(raw)
    entry["status"] = status
    if "error" in answer:
        entry["rejected"] = answer["error"]["message"]
    return json_response(answer, status, headers)
