"""`ki2api doctor`: a plain-language diagnosis of the Kiro login and the upstream."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx

from ki2api.core.errors import GatewayError
from ki2api.core.models import ModelCatalogue, default_catalogue
from ki2api.http_client import create_upstream_client, map_transport_errors
from ki2api.kiro.classify import classify_http_error
from ki2api.kiro.endpoint import (
    account_api_base,
    chat_headers,
    client_identity,
    identity_for,
    machine_id,
    set_identity,
)
from ki2api.kiro.login.api_key import ApiKeyCredentials, check_key, mask_key
from ki2api.kiro.login.credentials import AuthSnapshot, KiroCredentials, discover
from ki2api.settings import Settings

__all__ = ["mapping_lines", "run_doctor"]

OK, BAD, INFO = "[ok]  ", "[fail]", "[info]"
_MAX_PAGES = 20  # ListAvailableModels pages followed (a few dozen models per account)


def _say(mark: str, text: str) -> None:
    print(f"{mark} {text}")


async def run_doctor(settings: Settings, *, contact_upstream: bool = True) -> int:
    set_identity(identity_for(settings))
    _say(INFO, f"client identity: {client_identity().describe()}")
    found = discover(settings)
    _say(INFO, "looked for a Kiro login in:")
    for place in found.searched:
        print(f"         - {place}")
    if found.source is None and settings.kiro_api_key:
        return await _doctor_api_key(settings, settings.kiro_api_key, contact_upstream)
    if found.source is None:
        _say(BAD, "no Kiro login found. Log in with the Kiro IDE, or set KIRO_CREDS_FILE /")
        print("         KIRO_REFRESH_TOKEN. `ki2api demo` runs without an account.")
        return 1
    _say(OK, f"using {found.source.description}")
    async with create_upstream_client(settings) as http:
        creds = KiroCredentials(found.source, settings, http)
        await creds.load()
        _report_status(creds.status())
        if not contact_upstream:
            _print_mapping(_catalogue(settings), None)
            return 0
        try:
            auth = await creds.current()
        except GatewayError as exc:
            _say(BAD, f"could not get a usable access token: {exc.message}")
            return 1
        if creds.refresh_count:
            _say(OK, "the token was refreshed successfully and written back")
        else:
            _say(OK, "the access token is still valid (no refresh needed)")
        _report_profile(settings, auth)
        return await _probe_upstream(http, settings, auth)


async def _doctor_api_key(settings: Settings, key: str, contact_upstream: bool) -> int:
    """KIRO_API_KEY alone: check it is a key, and that Kiro answers it (never refreshed)."""
    try:
        check_key(key)
    except ValueError as exc:
        _say(BAD, f"KIRO_API_KEY: {exc}")
        return 1
    _say(OK, f"using KIRO_API_KEY {mask_key(key)} (a Kiro API key: never refreshed)")
    if not contact_upstream:
        return 0
    async with create_upstream_client(settings) as http:
        creds = ApiKeyCredentials(
            settings, http, account_id="api-key", label="KIRO_API_KEY", machine_id=None, key=key
        )
        auth = await creds.current()
        _report_profile(settings, auth)
        return await _probe_upstream(http, settings, auth)


def _report_profile(settings: Settings, auth: AuthSnapshot) -> None:
    """Which Q profile and region this login uses (docs/kiro-protocol.md §1.3, §3.1)."""
    arn = settings.kiro_profile_arn or auth.profile_arn
    where = account_api_base(settings, profile_arn=auth.profile_arn, login_region=auth.region)
    if arn:
        origin = "KIRO_PROFILE_ARN" if settings.kiro_profile_arn else "the login"
        _say(INFO, f"profile: {arn} (from {origin}); Kiro host: {where}")
    else:
        _say(INFO, f"profile: none (the calls go without a profileArn); Kiro host: {where}")


def _report_status(status: dict[str, object]) -> None:
    _say(INFO, f"login kind: {status.get('auth_method')}")
    expires = status.get("expires_at")
    left = status.get("seconds_left")
    if expires is None:
        _say(INFO, "expiry unknown (the token will be refreshed on first use)")
    elif isinstance(left, int | float) and left <= 0:
        _say(INFO, f"access token expired at {expires}; a refresh will be attempted")
    else:
        minutes = int(left) // 60 if isinstance(left, int | float) else "?"
        _say(INFO, f"access token expires at {expires} ({minutes} min left)")
    if status.get("read_only"):
        _say(INFO, "the token file is read-only: refreshed tokens are kept in memory only")


async def _probe_upstream(http: httpx.AsyncClient, settings: Settings, auth: AuthSnapshot) -> int:
    models: list[str] = []
    next_token: str | None = None
    for _ in range(_MAX_PAGES):
        page = await _models_page(http, settings, auth, next_token)
        if page is None:
            return 1
        models += page[0]
        next_token = page[1]
        if next_token is None:
            break
    _say(
        OK,
        f"Kiro answered at {datetime.now(UTC):%H:%M:%S} UTC; models: {', '.join(models)}",
    )
    _print_mapping(_catalogue(settings), set(models))
    return 0


async def _models_page(
    http: httpx.AsyncClient, settings: Settings, auth: AuthSnapshot, next_token: str | None
) -> tuple[list[str], str | None] | None:
    """One ListAvailableModels page: (model ids, next token); None (reported) on failure."""
    base = account_api_base(settings, profile_arn=auth.profile_arn, login_region=auth.region)
    url = f"{base}/ListAvailableModels"
    params = {"origin": "AI_EDITOR"}
    if auth.profile_arn:
        params["profileArn"] = auth.profile_arn
    if next_token:
        params["nextToken"] = next_token
    headers = chat_headers(
        auth.access_token, machine=machine_id(auth.account_id), invocation_id=str(uuid.uuid4())
    )
    try:
        with map_transport_errors():
            response = await http.get(url, params=params, headers=headers)
    except GatewayError as exc:
        _say(BAD, f"could not reach Kiro at {base}: {exc.message}")
        return None
    if response.status_code != 200:
        err = classify_http_error(response.status_code, response.content, response.headers)
        _say(BAD, f"Kiro answered {response.status_code}: {err.message}")
        return None
    page = _model_ids(response)
    if page is None:
        _say(BAD, f"Kiro answered, but Ki2API did not understand the answer: {_snippet(response)}")
    return page


def _model_ids(response: httpx.Response) -> tuple[list[str], str | None] | None:
    """(model ids, nextToken) of a ListAvailableModels answer; None when it is not the
    expected JSON."""
    try:
        data = response.json()
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("models", []), list):
        return None
    ids = [str(m.get("modelId")) for m in data.get("models", []) if isinstance(m, dict)]
    token = data.get("nextToken")
    return ids, token if isinstance(token, str) and token else None


def _catalogue(settings: Settings) -> ModelCatalogue:
    # `model_fallback` (KI2API_MODEL_FALLBACK) may not exist on older Settings: default on.
    fallback = bool(settings.model_fallback)
    return default_catalogue(family_fallback=fallback).with_overrides(settings.model_overrides)


def mapping_lines(catalogue: ModelCatalogue, offered: set[str] | None) -> list[str]:
    """The model mapping table: public name -> Kiro id, and, when `offered` (the account's
    ListAvailableModels ids) is known, whether the account offers each Kiro id."""
    rows = [(public, kiro, "") for public, kiro in catalogue.mapping()]
    if catalogue.family_fallback:
        rows += [
            (f"claude-{family}[-latest]", kiro, "  (no version: the newest; see docs/models.md)")
            for family, kiro in catalogue.family_targets()
        ]
    width = max((len(public) for public, _, _ in rows), default=0)
    lines = []
    for public, kiro, note in rows:
        mark = "" if offered is None else "  [offered]" if kiro in offered else "  [NOT OFFERED]"
        lines.append(f"{public.ljust(width)} -> {kiro}{mark}{note}")
    if not catalogue.family_fallback:
        lines.append("other names: 404 model_not_found (KI2API_MODEL_FALLBACK is off)")
    return lines


def _print_mapping(catalogue: ModelCatalogue, offered: set[str] | None) -> None:
    _say(INFO, "model names (public name -> Kiro model id):")
    for line in mapping_lines(catalogue, offered):
        print(f"         {line}")
    if offered is None:
        return
    missing = sorted({kiro for _, kiro in catalogue.mapping()} - offered)
    if missing:
        _say(INFO, f"this account is not offered: {', '.join(missing)}; requests for names")
        print("         mapped to them will fail. Change the mapping with KI2API_MODEL_MAP.")
    else:
        _say(OK, "every mapped Kiro model is offered to this account")


def _snippet(response: httpx.Response) -> str:
    kind = response.headers.get("content-type", "no content type")
    return f"{kind}, {len(response.content)} bytes"
