"""An account's remaining quota, from Kiro's `getUsageLimits` (docs/kiro-protocol.md §4.4).

`parse_usage_limits` is pure and never raises: a missing or odd field only makes the figure it
feeds unknown (None). Remaining = limit - used of the main breakdown (the `CREDIT` resource when
there is one), plus the limit - used of an active free trial and of every active bonus;
`*WithPrecision` floats win over the rounded integers. `fetch_quota` is the one HTTP call;
`check_quotas` runs it for every enabled account of a store and keeps the figures in health.
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ki2api.core.errors import GatewayError
from ki2api.http_client import create_upstream_client, map_transport_errors
from ki2api.kiro.accounts.importers import AccountSourceError, load_token_json
from ki2api.kiro.accounts.proxies import NetworkRoutes
from ki2api.kiro.classify import json_answer
from ki2api.kiro.endpoint import account_api_base, chat_headers
from ki2api.kiro.login.token_file import parse_expires_at
from ki2api.settings import Settings
from ki2api.state.base import FILE_SOURCES, AccountRecord, Health, StateStore

__all__ = ["Quota", "check_quotas", "fetch_quota", "parse_usage_limits"]

_MS_THRESHOLD = 1e11  # epoch values above this are milliseconds (year 5138 in seconds)
_MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Quota:
    remaining: float | None
    limit: float | None
    used: float | None
    reset_at: float | None  # epoch seconds
    subscription: str | None


def _number(obj: Mapping[str, Any], *names: str) -> float | None:
    """The first field of `names` holding a finite number (numeric strings accepted)."""
    for name in names:
        value = obj.get(name)
        if isinstance(value, bool) or value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            return number
    return None


def _limit_used(obj: Mapping[str, Any]) -> tuple[float | None, float | None]:
    return (
        _number(obj, "usageLimitWithPrecision", "usageLimit"),
        _number(obj, "currentUsageWithPrecision", "currentUsage"),
    )


def _breakdown(body: Mapping[str, Any]) -> Mapping[str, Any]:
    items = body.get("usageBreakdownList")
    entries = [e for e in items if isinstance(e, Mapping)] if isinstance(items, list) else []
    for entry in entries:
        if str(entry.get("resourceType", "")).upper() == "CREDIT":
            return entry
    return entries[0] if entries else {}


def _active(obj: object, status_field: str) -> bool:
    return isinstance(obj, Mapping) and str(obj.get(status_field, "")).upper() == "ACTIVE"


def _extras(entry: Mapping[str, Any]) -> list[tuple[float, float]]:
    """(limit, used) of the active free trial and active bonuses (unknown usage counts 0)."""
    found: list[Mapping[str, Any]] = []
    trial = entry.get("freeTrialInfo")
    if _active(trial, "freeTrialStatus") and isinstance(trial, Mapping):
        found.append(trial)
    bonuses = entry.get("bonuses")
    if isinstance(bonuses, list):
        found.extend(b for b in bonuses if _active(b, "status") and isinstance(b, Mapping))
    out: list[tuple[float, float]] = []
    for item in found:
        limit, used = _limit_used(item)
        if limit is not None:
            out.append((limit, used or 0.0))
    return out


def _epoch(value: object) -> float | None:
    if isinstance(value, str):
        parsed = parse_expires_at(value)
        if parsed is not None:
            return parsed[0].timestamp()
    number = _number({"v": value}, "v")
    if number is None or number <= 0:
        return None
    return number / 1000 if number > _MS_THRESHOLD else number


def _subscription(body: Mapping[str, Any]) -> str | None:
    info = body.get("subscriptionInfo")
    if not isinstance(info, Mapping):
        return None
    for name in ("subscriptionTitle", "type"):
        value = info.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()[:80]
    return None


def parse_usage_limits(body: Mapping[str, Any]) -> Quota:
    """The quota figures of a `getUsageLimits` answer; unknown figures are None."""
    if not isinstance(body, Mapping):
        return Quota(None, None, None, None, None)
    entry = _breakdown(body)
    limit, used = _limit_used(entry)
    extras = _extras(entry)
    if extras:
        extra_limit, extra_used = sum(x[0] for x in extras), sum(x[1] for x in extras)
        base_known = limit is not None or used is not None
        limit = (limit or 0.0) + extra_limit
        used = (used + extra_used) if used is not None else (None if base_known else extra_used)
    remaining = max(0.0, limit - used) if limit is not None and used is not None else None
    reset_at = _epoch(entry.get("nextDateReset"))
    if reset_at is None:
        reset_at = _epoch(body.get("nextDateReset"))
    return Quota(remaining, limit, used, reset_at, _subscription(body))


def _headers(access_token: str, machine_id: str) -> dict[str, str]:
    headers = chat_headers(access_token, machine=machine_id, invocation_id=str(uuid.uuid4()))
    headers.pop("content-type", None)
    headers["amz-sdk-request"] = "attempt=1; max=1"
    return headers


async def fetch_quota(
    http: httpx.AsyncClient,
    *,
    api_base: str,
    access_token: str,
    profile_arn: str | None,
    machine_id: str,
) -> Quota:
    """GET `getUsageLimits` for one account; upstream failures raise `GatewayError`."""
    params = {"origin": "AI_EDITOR", "resourceType": "AGENTIC_REQUEST"}
    if profile_arn:
        params["profileArn"] = profile_arn
    url = f"{api_base.rstrip('/')}/getUsageLimits"
    with map_transport_errors("Kiro getUsageLimits"):
        response = await http.get(url, params=params, headers=_headers(access_token, machine_id))
    parsed = json_answer(
        response.status_code,
        response.content[:_MAX_BODY_BYTES],
        dict(response.headers),
        "Kiro getUsageLimits",
    )
    return parse_usage_limits(parsed)


# the accounts in a store ------------------------------------------------------------------------

_EXPIRY_MARGIN_S = 30.0


def _usable_access_token(data: Mapping[str, Any], now: float) -> str | None:
    token = data.get("accessToken")
    if not isinstance(token, str) or not token:
        return None
    expires = parse_expires_at(data.get("expiresAt"))
    if expires is not None and expires[0].timestamp() <= now + _EXPIRY_MARGIN_S:
        return None
    return token


async def _token_candidates(
    settings: Settings, store: StateStore, record: AccountRecord
) -> list[Mapping[str, Any]]:
    """The token JSONs an account may be used with: the store's copy first, then its file."""
    found: list[Mapping[str, Any]] = []
    stored = await store.load_tokens(record.id)
    if stored is not None:
        key = stored.data.get("apiKey")  # an API key is its own bearer (kiro/login/api_key.py)
        found.append({**stored.data, "accessToken": key} if key else stored.data)
    if record.source in FILE_SOURCES and record.path:
        try:
            found.append(load_token_json(Path(record.path)))
        except AccountSourceError:
            pass
    if record.source == "env" and record.auth_method == "api_key":
        if settings.kiro_api_key:
            found.append({"accessToken": settings.kiro_api_key, "region": settings.kiro_api_region})
    elif record.source == "env" and settings.kiro_access_token:
        found.append({"accessToken": settings.kiro_access_token})
    return found


async def _check_one(
    settings: Settings,
    store: StateStore,
    http: httpx.AsyncClient,
    record: AccountRecord,
    now: float,
) -> str | None:
    """Fetch and store one account's quota; returns a note when it could not."""
    for data in await _token_candidates(settings, store, record):
        token = _usable_access_token(data, now)
        if token is None:
            continue
        arn = data.get("profileArn")
        quota = await fetch_quota(
            http,
            api_base=account_api_base(
                settings,
                profile_arn=arn if isinstance(arn, str) and arn else None,
                login_region=data.get("region") if isinstance(data.get("region"), str) else None,
            ),
            access_token=token,
            profile_arn=arn if isinstance(arn, str) and arn else settings.kiro_profile_arn,
            machine_id=record.machine_id,
        )
        old = (await store.health()).get(record.id) or Health(record.id)
        await store.put_health(
            dataclasses.replace(
                old,
                quota_remaining=quota.remaining,
                quota_limit=quota.limit,
                quota_reset_at=quota.reset_at,
                quota_checked_at=time.time(),
            )
        )
        return None
    return f"{record.id}: quota not checked (no unexpired access token; refresh it first)"


async def check_quotas(
    settings: Settings,
    store: StateStore,
    http: httpx.AsyncClient | None = None,
    routes: NetworkRoutes | None = None,
) -> list[str]:
    """Fetch the quota of every enabled account that has a usable access token and keep it in
    the account's health (other health fields untouched), each through its network path
    (`routes`, else made here). Returns notes on those skipped."""
    notes: list[str] = []
    own = http is None
    client = http if http is not None else create_upstream_client(settings)
    paths = routes or NetworkRoutes(settings, client)
    try:
        now = time.time()
        records = await store.list_accounts()
        if routes is None:
            paths.update(records)
        for record in records:
            if not record.enabled:
                continue
            try:
                note = await _check_one(settings, store, paths.http_for(record.id), record, now)
            except GatewayError as exc:
                note = f"{record.id}: quota not checked: {exc.message}"
            if note is not None:
                notes.append(note)
    finally:
        if routes is None:
            await paths.aclose()
        if own:
            await client.aclose()
    return notes
