"""The emulator's ASGI app: Kiro's upstream endpoints plus the `/_emulator` control surface."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from . import admin, signin, tokens
from .common import bearer, emulator, is_api_key, json_object, request_id_headers
from .config import EmulatorConfig
from .credentials import write_credentials
from .errors import BEARER_INVALID, INVALID_MODEL, UNKNOWN_OPERATION, Rejection, json_response
from .faults import TRANSPORT_KEY, DropConnection, decide, transport_of
from .mcp import mcp
from .models import list_models_page, native_thinking, usage_limits
from .profiles import LIST_PROFILES_TARGET, check_profile, list_profiles_page
from .regions import strip_region
from .reqlog import record
from .script import DIRECTIVE, parse_directives, plan_reply
from .state import Account, EmulatorState
from .stream import build_plan, stream_body
from .validate import parse_chat

__all__ = ["CHAT_TARGET", "EVENTSTREAM", "EmulatorApp", "create_app"]

CHAT_TARGET = "AmazonCodeWhispererStreamingService.GenerateAssistantResponse"
EVENTSTREAM = "application/vnd.amazon.eventstream"


def _note_fault(account: Account, entry: dict[str, Any], name: str | None) -> None:
    if name is not None:
        account.counters.faults += 1
        entry["fault"] = name


async def _counted(
    state: EmulatorState, account: Account, body: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    state.stream_started(account)
    try:
        async for piece in body:
            yield piece
    finally:
        state.stream_ended(account)


async def _answer_chat(
    state: EmulatorState,
    raw: bytes,
    account: Account | None,
    entry: dict[str, Any],
    cli_flavour: bool = False,
    by_api_key: bool = False,
) -> Response:
    if account is None:
        raise BEARER_INVALID.because("missing, unknown or expired bearer token")
    account.counters.chat_requests += 1
    if account.behaviour.latency_ms > 0:
        await state.sleep(account.behaviour.latency_ms / 1000)
    fault = decide(account.behaviour, account.fault_rng)
    if fault.rejection is not None or fault.drop:
        _note_fault(account, entry, fault.name)
        if fault.rejection is not None:
            raise fault.rejection
        return DropConnection()
    # an API key's calls need no profile ARN (only the models that always do)
    req = parse_chat(raw, "api_key" if by_api_key else account.auth_method)
    offered = account.behaviour.models
    if offered is not None and req.model_id not in offered:  # not in this account's list
        raise INVALID_MODEL.because(f"modelId {req.model_id!r} is not offered to this account")
    if account.behaviour.location_blocked and req.model_id.lower().startswith("claude"):
        _note_fault(account, entry, "location_blocked")  # Claude refused to this "network"
        raise INVALID_MODEL.because("location_blocked: Claude models refused here")
    arn = (json_object(raw) or {}).get("profileArn")
    check_profile(account, arn if isinstance(arn, str) else None, req.model_id)
    directives, content = parse_directives(req.content)
    if not DIRECTIVE.search(req.content) and DIRECTIVE.search(req.tool_results_text):
        directives, _ = parse_directives(req.tool_results_text)  # an agent loop's next turn
    if directives.error is not None:
        err = directives.error
        kind = err.get("type") if isinstance(err.get("type"), str) else None
        raise Rejection(err["status"], err.get("body", {}), kind, "directive error")
    native = native_thinking(json_object(raw) or {}, req.model_id)  # additionalModelRequestFields
    new_id = state.new_tool_use_id
    reply = plan_reply(content, req.tools, directives, new_id, native_thinking=native)
    plan = build_plan(
        reply,
        directives,
        req.model_id,
        req.body_chars,
        fault.stream,
        initial_response=cli_flavour,  # 2026 kiro-cli streams (POST /) begin with one
    )
    _note_fault(account, entry, fault.name)
    account.counters.served += 1
    headers = request_id_headers(state)
    headers["x-amzn-codewhisperer-conversation-id"] = req.conversation_id or state.new_uuid()
    body = _counted(state, account, stream_body(plan, state.sleep))
    return StreamingResponse(body, headers=headers, media_type=EVENTSTREAM)


async def chat(request: Request) -> Response:
    state = emulator(request)
    raw = await request.body()
    token = bearer(request)
    account = state.authenticate(token)
    entry = record(state, request, raw, account)
    try:
        cli_flavour = request.url.path == "/"
        response = await _answer_chat(state, raw, account, entry, cli_flavour, is_api_key(token))
    except Rejection as r:
        return r.logged(entry, request_id_headers(state))
    entry["status"] = None if isinstance(response, DropConnection) else response.status_code
    return response


async def root(request: Request) -> Response:
    """`POST /` dispatches on `x-amz-target` like an AWS JSON-protocol service."""
    target = request.headers.get("x-amz-target", "")
    if target == CHAT_TARGET:
        return await chat(request)
    if target == LIST_PROFILES_TARGET:
        return await list_profiles(request)
    state = emulator(request)
    entry = record(state, request, await request.body(), None)
    entry["status"], entry["rejected"] = 400, "unknown x-amz-target"
    return UNKNOWN_OPERATION.response(request_id_headers(state))


def _authorized(request: Request) -> Account:
    state = emulator(request)
    account = state.authenticate(bearer(request))
    record(state, request, b"", account)["status"] = 200 if account else 403
    if account is None:
        raise BEARER_INVALID
    return account


async def list_profiles(request: Request) -> Response:
    """`ListAvailableProfiles` (profiles.py): the bearer's own profile."""
    state = emulator(request)
    try:
        account = _authorized(request)
    except Rejection as r:
        return r.response(request_id_headers(state))
    return json_response(list_profiles_page(account), headers=request_id_headers(state))


async def list_models(request: Request) -> Response:
    try:
        account = _authorized(request)
    except Rejection as r:
        return r.response(request_id_headers(emulator(request)))
    raw_max = request.query_params.get("maxResults", "50")
    max_results = int(raw_max) if raw_max.isdigit() else 50
    token = request.query_params.get("nextToken")
    page = list_models_page(max_results, token, account.behaviour.models)
    return json_response(page, headers=request_id_headers(emulator(request)))


async def get_usage_limits(request: Request) -> Response:
    state = emulator(request)
    try:
        account = _authorized(request)
        check_profile(account, request.query_params.get("profileArn"))
    except Rejection as r:
        return r.response(request_id_headers(state))
    body = usage_limits(
        account.counters.served,
        account.behaviour.quota_exhausted,
        state.clock(),
        f"{account.id}@example.com",
        account.behaviour.quota_reset_at,
        account.behaviour.usage_limit,
    )
    return json_response(body, headers=request_id_headers(state))


class EmulatorApp(Starlette):
    """Starlette that keeps the server's transport in the scope (for drop_connection)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope[TRANSPORT_KEY] = transport_of(send)
            strip_region(scope)  # `/eu-central-1/...`: that region's host (regions.py)
        await super().__call__(scope, receive, send)


def create_app(
    config: EmulatorConfig | None = None,
    *,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], Awaitable[Any]] | None = None,
) -> Starlette:
    """A fresh emulator (its own accounts, tokens and log). `clock` returns epoch seconds."""
    config = config or EmulatorConfig()
    state = EmulatorState(config, clock or time.time, sleep or asyncio.sleep)
    accounts = state.add_accounts(config.accounts, config.auth_method, config.behaviour)
    if config.credentials_dir is not None:
        write_credentials(config.credentials_dir, [state.describe(a) for a in accounts])
    routes = [
        Route("/generateAssistantResponse", chat, methods=["POST"]),
        Route("/", root, methods=["POST"]),
        Route("/refreshToken", tokens.social_refresh, methods=["POST"]),
        Route("/token", tokens.oidc_create_token, methods=["POST"]),
        Route("/ListAvailableModels", list_models, methods=["GET"]),
        Route("/getUsageLimits", get_usage_limits, methods=["GET"]),
        Route("/mcp", mcp, methods=["POST"]),
        *admin.routes(),
        *signin.routes(),
    ]
    app = EmulatorApp(routes=routes)
    app.state.emulator = state
    app.state.signin = signin.Signin()
    return app
