"""Background care of the pool: gentle quota polling, and a second chance for revoked logins.

* Every `quota_poll_s` (first a few seconds after start) one worker (a store lock decides
  which) asks getUsageLimits for each enabled account that holds a live access token, one
  account after another, and keeps the figures in the store; the pool then re-reads health,
  so an account's quota reset date is known before it runs dry.
* At start, a token-file or environment login disabled earlier for `invalid_grant` is enabled
  again once: the user may have signed in again while the gateway was down. If the login is
  still revoked, the first refresh disables it again. Suspended accounts stay disabled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

import httpx

from ki2api.core.errors import GatewayError
from ki2api.kiro.accounts.pool import AccountPool, PoolAccount, QuotaLookup
from ki2api.kiro.accounts.proxies import NetworkRoutes
from ki2api.kiro.accounts.quota import Quota, check_quotas, fetch_quota
from ki2api.kiro.endpoint import account_api_base, machine_id
from ki2api.settings import Settings
from ki2api.state.base import StateStore
from ki2api.state.store_status import StoreAway

__all__ = ["QuotaPoller", "quota_lookup", "retry_revoked_logins"]

_log = logging.getLogger(__name__)
_FIRST_POLL_S = 5.0
_RETRY_SOURCES = frozenset({"file", "env", "linked"})


async def retry_revoked_logins(store: StateStore) -> list[str]:
    """Enable token-file / environment accounts disabled for `invalid_grant`; their ids."""
    enabled: list[str] = []
    for record in await store.list_accounts():
        if record.enabled or record.disabled_reason != "invalid_grant":
            continue
        if record.source in _RETRY_SOURCES:
            await store.set_enabled(record.id, True, None)
            enabled.append(record.id)
    for account_id in enabled:
        _log.info("account %s: trying its login again (it was refused last time)", account_id)
    return enabled


def quota_lookup(
    settings: Settings, http: httpx.AsyncClient, routes: NetworkRoutes | None = None
) -> QuotaLookup:
    """What the pool asks when an account runs dry: getUsageLimits with its current token,
    through the account's network path (`routes`)."""

    async def look(account: PoolAccount) -> Quota | None:
        try:
            auth = await account.credentials.current()
            return await fetch_quota(
                routes.http_for(account.id) if routes is not None else http,
                api_base=account_api_base(
                    settings, profile_arn=auth.profile_arn, login_region=auth.region
                ),
                access_token=auth.access_token,
                profile_arn=auth.profile_arn or settings.kiro_profile_arn,
                machine_id=auth.machine_id or machine_id(account.id),
            )
        except GatewayError as exc:
            _log.info("account %s: quota not known (%s)", account.id, exc.message)
            return None

    return look


class QuotaPoller:
    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        pool: AccountPool,
        http: httpx.AsyncClient,
        routes: NetworkRoutes | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._pool = pool
        self._http = http
        self._routes = routes  # each account's network path (its proxy)
        self._owner = secrets.token_hex(8)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._settings.quota_poll_s > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="quota-poll")

    async def _run(self) -> None:
        interval = self._settings.quota_poll_s
        await asyncio.sleep(min(_FIRST_POLL_S, interval))
        while True:
            await self.poll_once()
            await asyncio.sleep(interval)

    async def poll_once(self) -> bool:
        """One round (if no other worker is doing it); True when this worker polled."""
        lease = max(60.0, self._settings.quota_poll_s / 2)
        try:
            if not await self._store.try_lock("quota-poll", self._owner, lease):
                return False
        except StoreAway:  # the next round, when the store is back
            return False
        try:
            notes = await check_quotas(self._settings, self._store, self._http, self._routes)
        except Exception:  # never let the poller die: the next round tries again
            _log.warning("quota poll failed", exc_info=True)
            return True
        for note in notes:
            _log.debug("quota poll: %s", note)
        await self._pool.load()  # take in what was written
        return True

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
