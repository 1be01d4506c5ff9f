"""The models each account is really offered, from Kiro's `ListAvailableModels`
(docs/kiro-protocol.md §4.3).

`parse_models_page` is pure and never raises: an entry without a `modelId` is skipped, an odd
limit falls back to the defaults. `fetch_offered` is the HTTP call (every page).
`LiveCatalogue` keeps, in memory per process, what each account offers: it asks once per account
when first needed (the first request or `/v1/models`, or at start), again every `refresh_s`
(6 h), and after a failure (or no answer within `timeout_s`, 10 s: the first request waits for
it) retries no sooner than `retry_s`. An account whose catalogue is not
known (never fetched, or the call failed) is taken to offer the static table (core/models.py).
Not kept in the state store: the call is cheap, each worker asks for itself (a few GETs per
account every 6 h), and nothing is lost on restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from ki2api.core.errors import GatewayError
from ki2api.core.models import ModelCatalogue, OfferedModel
from ki2api.http_client import map_transport_errors
from ki2api.kiro.accounts.pool import AccountPool
from ki2api.kiro.accounts.proxies import NetworkRoutes
from ki2api.kiro.classify import json_answer
from ki2api.kiro.endpoint import account_api_base, chat_headers, machine_id
from ki2api.settings import Settings

__all__ = [
    "LiveCatalogue",
    "fetch_offered",
    "live_catalogue",
    "native_fields",
    "parse_models_page",
]

_log = logging.getLogger(__name__)
_MAX_BODY_BYTES = 2 * 1024 * 1024
_MAX_PAGES = 20
REFRESH_S = 6 * 3600.0
RETRY_S = 300.0
TIMEOUT_S = 10.0

OfferedFetch = Callable[[str], Awaitable[tuple[OfferedModel, ...]]]


def _positive_int(value: object, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return default
    return int(value)


def _properties(schema: object) -> Mapping[str, Any]:
    if not isinstance(schema, Mapping):
        return {}
    props = schema.get("properties")
    return props if isinstance(props, Mapping) else {}


def native_fields(schema: object) -> frozenset[str]:
    """What an `additionalModelRequestFieldsSchema` offers: "thinking" (a `thinking` field),
    "effort" (`output_config.effort`) and "max_tokens". The schema may arrive as a JSON string."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError:
            return frozenset()
    props = _properties(schema)
    found = set()
    if "thinking" in props:
        found.add("thinking")
    if "effort" in _properties(props.get("output_config")):
        found.add("effort")
    if "max_tokens" in props:
        found.add("max_tokens")
    return frozenset(found)


def _model(entry: Mapping[str, Any]) -> OfferedModel | None:
    model_id = entry.get("modelId")
    if not isinstance(model_id, str) or not model_id.strip():
        return None
    model_id = model_id.strip()
    name = entry.get("modelName")
    limits = entry.get("tokenLimits")
    limits = limits if isinstance(limits, Mapping) else {}
    inputs = entry.get("supportedInputTypes")
    images = any(str(t).upper() == "IMAGE" for t in inputs) if isinstance(inputs, list) else True
    return OfferedModel(
        kiro_id=model_id,
        display_name=name.strip() if isinstance(name, str) and name.strip() else model_id,
        context_window=_positive_int(limits.get("maxInputTokens"), 200_000),
        max_output_tokens=_positive_int(limits.get("maxOutputTokens"), 64_000),
        images=images,
        native=native_fields(entry.get("additionalModelRequestFieldsSchema")),
    )


def parse_models_page(body: object) -> tuple[list[OfferedModel], str | None]:
    """(models, nextToken) of one ListAvailableModels answer; odd entries are skipped."""
    if not isinstance(body, Mapping):
        return [], None
    entries = body.get("models")
    models = [
        m
        for e in (entries if isinstance(entries, list) else [])
        if isinstance(e, Mapping) and (m := _model(e)) is not None
    ]
    token = body.get("nextToken")
    return models, token if isinstance(token, str) and token else None


async def fetch_offered(
    http: httpx.AsyncClient,
    *,
    api_base: str,
    access_token: str,
    profile_arn: str | None,
    machine_id: str,
) -> tuple[OfferedModel, ...]:
    """GET every page of `ListAvailableModels` for one account; failures raise GatewayError."""
    url = f"{api_base.rstrip('/')}/ListAvailableModels"
    found: dict[str, OfferedModel] = {}
    token: str | None = None
    for _ in range(_MAX_PAGES):
        params = {"origin": "AI_EDITOR", "maxResults": "50"}
        if profile_arn:
            params["profileArn"] = profile_arn
        if token:
            params["nextToken"] = token
        headers = chat_headers(access_token, machine=machine_id, invocation_id=str(uuid.uuid4()))
        headers.pop("content-type", None)
        headers["amz-sdk-request"] = "attempt=1; max=1"
        with map_transport_errors("Kiro ListAvailableModels"):
            response = await http.get(url, params=params, headers=headers)
        parsed = json_answer(
            response.status_code,
            response.content[:_MAX_BODY_BYTES],
            dict(response.headers),
            "Kiro ListAvailableModels",
        )
        models, token = parse_models_page(parsed)
        for m in models:
            found.setdefault(m.kiro_id, m)
        if token is None:
            break
    return tuple(found.values())


class LiveCatalogue:
    """What the accounts offer (see the module docstring), and the catalogue built from it.

    `account_ids` lists the enabled accounts now; `fetch` asks Kiro for one of them.
    """

    def __init__(
        self,
        static: ModelCatalogue,
        account_ids: Callable[[], list[str]],
        fetch: OfferedFetch,
        *,
        refresh_s: float = REFRESH_S,
        retry_s: float = RETRY_S,
        timeout_s: float = TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.static = static
        self._account_ids = account_ids
        self._fetch = fetch
        self._refresh_s = refresh_s
        self._retry_s = retry_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._offers: dict[str, tuple[OfferedModel, ...]] = {}
        self._offer_ids: dict[str, frozenset[str]] = {}
        self._asked: dict[str, float] = {}  # account id -> when last asked (clock)
        self._lock = asyncio.Lock()
        self._built: tuple[tuple[str, ...], ModelCatalogue] | None = None
        self._static_ids = static.kiro_ids()

    def _due(self, account_id: str, now: float) -> bool:
        asked = self._asked.get(account_id)
        if asked is None:
            return True
        wait = self._refresh_s if account_id in self._offers else self._retry_s
        return now - asked >= wait

    async def refresh(self) -> None:
        """Ask Kiro for each account whose catalogue is due, all at once (a request that finds
        some due waits for the slowest answer, at most `timeout_s`, not for their sum)."""
        if not any(self._due(a, self._clock()) for a in self._account_ids()):
            return
        async with self._lock:
            due = [a for a in self._account_ids() if self._due(a, self._clock())]
            for account_id in due:
                self._asked[account_id] = self._clock()
            await asyncio.gather(*(self._ask(a) for a in due))

    async def _ask(self, account_id: str) -> None:
        try:
            offered = await asyncio.wait_for(self._fetch(account_id), self._timeout_s)
        except TimeoutError:
            _log.info("account %s: model list not known (no answer in time)", account_id)
            return
        except GatewayError as exc:
            _log.info("account %s: model list not known (%s)", account_id, exc.message)
            return
        except Exception:  # the static table serves meanwhile
            _log.warning("account %s: model list failed", account_id, exc_info=True)
            return
        if offered:
            self._offers[account_id] = offered
            self._offer_ids[account_id] = frozenset(m.kiro_id for m in offered)
            self._built = None

    def offered_ids(self, account_id: str) -> frozenset[str]:
        """The Kiro model ids `account_id` may be sent (the static table's when not known)."""
        return self._offer_ids.get(account_id, self._static_ids)

    def known(self, account_id: str) -> bool:
        return account_id in self._offers

    def current(self) -> ModelCatalogue:
        """The catalogue of what the enabled accounts offer together (no fetching)."""
        ids = tuple(sorted(self._account_ids()))
        if self._built is not None and self._built[0] == ids:
            return self._built[1]
        offered = [m for a in ids for m in self._offers.get(a, ())]
        unknown = not ids or any(a not in self._offers for a in ids)
        built = (
            self.static
            if not offered
            else self.static.with_offered(offered, keep_unoffered=unknown)
        )
        self._built = (ids, built)
        return built

    async def catalogue(self) -> ModelCatalogue:
        """`current()` after asking for any catalogue that is due."""
        await self.refresh()
        return self.current()


def live_catalogue(
    settings: Settings,
    http: httpx.AsyncClient,
    pool: AccountPool,
    static: ModelCatalogue,
    routes: NetworkRoutes | None = None,
) -> LiveCatalogue:
    """The pool's live catalogue: each enabled account asked with its current token, on its own
    region's Q host, through its network path (`routes`); the pool then sends a request only
    to accounts that offer its model."""

    async def fetch(account_id: str) -> tuple[OfferedModel, ...]:
        account = pool.get(account_id)
        if account is None:
            return ()
        auth = await account.credentials.current()
        return await fetch_offered(
            routes.http_for(account_id) if routes is not None else http,
            api_base=account_api_base(
                settings, profile_arn=auth.profile_arn, login_region=auth.region
            ),
            access_token=auth.access_token,
            profile_arn=auth.profile_arn or settings.kiro_profile_arn,
            machine_id=auth.machine_id or machine_id(account_id),
        )

    def enabled() -> list[str]:
        return [a.id for a in pool.accounts if a.record.enabled]

    live = LiveCatalogue(static, enabled, fetch)
    pool.offers = live.offered_ids
    return live
