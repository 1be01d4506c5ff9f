"""One Kiro account's login: current token, refresh ahead of expiry, single-flight, write-back.

`KiroCredentials.current()` hands out a token, refreshing first when it is missing or expires
within `settings.refresh_ahead_s`. `refresh(stale=token)` is the backend's forced refresh after
the upstream refused `token`; it is a no-op when that token has already been replaced. However
many callers wait, one refresh per account is in flight: they all await the same task, which is
shielded so a cancelled caller does not abort a refresh the others (or the token file) need.

Before refreshing, a token file changed on disk (the Kiro IDE refreshed it) is re-read and its
tokens adopted when newer. After refreshing, the file is rewritten atomically, keeping every
other key and the `expiresAt` style; a read-only file keeps the token in memory (one warning).
A failed refresh writes nothing and is remembered for `failure_backoff_s` so a burst of requests
does not become a refresh storm; after that the next request tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import httpx

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.kiro.login.discovery import (
    CredentialSource,
    Discovery,
    discover,
    no_credentials_error,
)
from ki2api.kiro.login.file_store import TokenFileStore, TokenSet
from ki2api.kiro.login.profiles import ide_profile_arn, list_available_profiles
from ki2api.kiro.login.refresh import RELOGIN_HINT, RefreshedTokens, refresh_idc, refresh_social
from ki2api.kiro.login.token_home import FileTokenHome, MemoryTokenHome, TokenHome
from ki2api.metrics import REFRESHES
from ki2api.settings import Settings
from ki2api.state.base import StateStore
from ki2api.state.store_status import StoreAway

__all__ = ["AuthSnapshot", "CredentialSource", "Discovery", "KiroCredentials", "discover"]

_log = logging.getLogger(__name__)
REFRESH_TIMEOUT_S = 30.0
PROFILE_RETRY = timedelta(minutes=5)  # an IdC login that found no profile looks again after
LOCK_TTL_S = 10.0  # a killed holder's lock lapses this soon; a live one renews it
_LOCK_RENEW_S = 3.0
_LOCK_POLL_S = 0.05


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AuthSnapshot:
    account_id: str
    access_token: str = field(repr=False)
    profile_arn: str | None
    auth_method: str  # "social" | "idc"
    expires_at: datetime | None
    machine_id: str | None = None  # the account's own stable machine id, when it has one
    region: str | None = None  # the login's own region (an IdC token file's `region`)


def _is_newer(disk: TokenSet, mine: TokenSet) -> bool:
    """Should tokens read from a changed token file replace the ones in memory?"""
    if mine.access_token is None and mine.refresh_token is None:
        return True  # first read
    if disk.access_token is None or disk.access_token == mine.access_token:
        return False
    if disk.expires_at is None or mine.expires_at is None:
        return True  # a different token written after our last read: the file is newer
    return disk.expires_at >= mine.expires_at


class KiroCredentials:
    """The login of one Kiro account (see the module docstring)."""

    def __init__(
        self,
        source: CredentialSource,
        settings: Settings,
        http: httpx.AsyncClient | Callable[[], httpx.AsyncClient],
        *,
        clock: Callable[[], datetime] = _utc_now,
        account_id: str = "default",
        failure_backoff_s: float = 5.0,
        home: TokenHome | None = None,
        locks: StateStore | None = None,
        machine_id: str | None = None,
    ) -> None:
        self._source = source
        self._settings = settings
        # a callable: the client of the account's current network path (its proxy), per call
        self._http = http if callable(http) else (lambda: http)
        self._clock = clock
        self._account_id = account_id
        self._backoff = timedelta(seconds=failure_backoff_s)
        self._tokens = TokenSet()
        self._home: TokenHome = home or _default_home(source, settings, account_id)
        self._locks = locks  # shared with other workers: one refresh per account among them
        self._owner = secrets.token_hex(8)
        self._machine_id = machine_id
        self._inflight: asyncio.Task[AuthSnapshot] | None = None
        self._refresh_count = 0
        self._failure_count = 0
        self._last_error: GatewayError | None = None
        self._failed_at: datetime | None = None
        self._last_ok_at: datetime | None = None
        self._load_problem: str | None = None
        self._profile_tried_at: datetime | None = None
        self._stale: str | None = None  # the last token the upstream refused

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> KiroCredentials:
        """Credentials from the first place `discover()` finds; NO_CREDENTIALS when none."""
        found = discover(settings)
        if found.source is None:
            raise no_credentials_error(found)
        return cls(found.source, settings, http, clock=clock)

    def __repr__(self) -> str:
        return f"KiroCredentials(account_id={self._account_id!r}, source={self._source.kind!r})"

    @property
    def account_id(self) -> str:
        return self._account_id

    @property
    def refresh_count(self) -> int:
        """Successful upstream refreshes so far."""
        return self._refresh_count

    @property
    def login_region(self) -> str | None:
        """The login's own region (an IdC token file's `region`) once loaded, else None."""
        return self._home.region if self._home.loaded else None

    async def current(self) -> AuthSnapshot:
        """A token to use now; refreshes first if it is missing or about to expire."""
        await self._ensure_loaded()
        if not self._needs_refresh(self._clock()):
            return await self._with_profile(self._snapshot())
        try:
            return await self._with_profile(await self._join_refresh())
        except GatewayError as exc:
            if self._usable(self._clock()):
                _log.debug(  # the failed attempt itself was logged once, as a warning
                    "account %s: refresh ahead of expiry failed (%s); using the current token "
                    "until it expires",
                    self._account_id,
                    exc.message,
                )
                return self._snapshot()
            raise

    async def refresh(self, *, stale: str | None = None) -> AuthSnapshot:
        """Forced refresh (single-flight). If `stale` was already replaced, return the new one."""
        await self._ensure_loaded()
        mine = self._tokens.access_token
        if stale is not None and mine is not None and mine != stale:
            return self._snapshot()
        self._stale = mine  # the upstream refused it: refreshed even while the store is away
        return await self._with_profile(await self._join_refresh())

    async def load(self) -> None:
        """Read the token home now, so `status()` shows it; a problem is reported there."""
        try:
            await self._ensure_loaded()
        except GatewayError:
            pass

    def status(self) -> dict[str, object]:
        """Health/doctor view of this login (as last loaded). Never contains a token or secret."""
        problem = self._load_problem
        now = self._clock()
        tokens = self._tokens
        expires = tokens.expires_at
        return {
            "account_id": self._account_id,
            "source": self._source.description,
            "source_kind": self._source.kind,
            "path": str(self._home.path) if self._home.path else None,
            "auth_method": self._auth_method(),
            "has_access_token": tokens.access_token is not None,
            "has_refresh_token": tokens.refresh_token is not None,
            "profile_arn": self._profile_arn(),
            "expires_at": expires.isoformat() if expires else None,
            "seconds_left": round((expires - now).total_seconds(), 1) if expires else None,
            "refresh_count": self._refresh_count,
            "refresh_failures": self._failure_count,
            "last_refresh_ok": self._last_refresh_ok(),
            "last_refresh_at": self._last_ok_at.isoformat() if self._last_ok_at else None,
            "last_error": self._last_error.message if self._last_error else problem,
            "read_only": self._home.read_only,
        }

    # -- state ----------------------------------------------------------------------------

    def _last_refresh_ok(self) -> bool | None:
        if self._last_error is not None:
            return False
        return True if self._last_ok_at is not None else None

    def _auth_method(self) -> str:
        return self._home.auth_method if self._home.loaded else "social"

    def _profile_arn(self) -> str | None:
        return self._settings.kiro_profile_arn or self._tokens.profile_arn

    async def _with_profile(self, snap: AuthSnapshot) -> AuthSnapshot:
        """An IdC login without a profile ARN finds one where the official clients do (the
        IDE's profile.json for the IDE's own login, else ListAvailableProfiles) and keeps it
        with its tokens (token file or store). Never raises: without one the call goes as is."""
        if snap.profile_arn or snap.auth_method != "idc":
            return snap
        now = self._clock()
        if self._profile_tried_at is not None and now - self._profile_tried_at < PROFILE_RETRY:
            return snap
        self._profile_tried_at = now
        arn = await self._find_profile(snap.access_token)
        if arn is None or self._tokens.access_token is None:
            return snap
        self._tokens = replace(self._tokens, profile_arn=arn)
        await self._home.save(self._tokens)
        _log.info("account %s: uses profile %s", self._account_id, arn)
        return self._snapshot()

    async def _find_profile(self, access_token: str) -> str | None:
        settings = self._settings
        ide_file = settings.home_dir / ".aws" / "sso" / "cache" / "kiro-auth-token.json"
        if self._home.path is not None and self._home.path == ide_file:
            arn = ide_profile_arn(settings.home_dir)
            if arn is not None:
                return arn
        region = self._home.region if self._home.loaded else "us-east-1"
        q_region = "eu-central-1" if region.startswith("eu-") else "us-east-1"
        base = settings.kiro_api_base.replace("{region}", q_region)
        try:
            arns = await list_available_profiles(
                self._http(), api_base=base, access_token=access_token, timeout=REFRESH_TIMEOUT_S
            )
        except GatewayError as exc:
            _log.warning(
                "account %s: Identity Center login without a profile ARN, and "
                "ListAvailableProfiles failed: %s",
                self._account_id,
                exc.message,
            )
            return None
        if not arns:
            _log.warning(
                "account %s: Identity Center login without a profile ARN, and "
                "ListAvailableProfiles listed none (set KIRO_PROFILE_ARN)",
                self._account_id,
            )
        return arns[0] if arns else None

    def _snapshot(self) -> AuthSnapshot:
        token = self._tokens.access_token
        if token is None:  # only reachable through a bug: refresh always sets one
            raise GatewayError(ErrorKind.INTERNAL, "no Kiro access token after refresh")
        return AuthSnapshot(
            self._account_id,
            token,
            self._profile_arn(),
            self._auth_method(),
            self._tokens.expires_at,
            self._machine_id,
            self._home.region if self._home.loaded else None,
        )

    def _needs_refresh(self, now: datetime) -> bool:
        tokens = self._tokens
        if tokens.access_token is None:
            return True
        if tokens.expires_at is None:
            return False  # unknown expiry: use it until the upstream refuses it
        return (tokens.expires_at - now).total_seconds() <= self._refresh_lead()

    def _refresh_lead(self) -> float:
        """How long before expiry to refresh: the setting, but at most half of the lifetime
        of a token we refreshed ourselves (short-lived tokens must not refresh on every call)."""
        lead = self._settings.refresh_ahead_s
        expires = self._tokens.expires_at
        if self._last_ok_at is not None and expires is not None:
            lead = min(lead, (expires - self._last_ok_at).total_seconds() / 2)
        return lead

    def _usable(self, now: datetime) -> bool:
        expires = self._tokens.expires_at
        return self._tokens.access_token is not None and (expires is None or expires > now)

    # -- token file -----------------------------------------------------------------------

    async def _ensure_loaded(self) -> None:
        if not self._home.loaded:
            try:
                await self._sync()
            except GatewayError as exc:
                self._load_problem = exc.message
                raise
            self._load_problem = None

    async def _sync(self) -> bool:
        """Re-read the token home if it changed; True when its tokens were adopted."""
        disk = await self._home.load_changed()
        if disk is None or not _is_newer(disk, self._tokens):
            return False
        mine = self._tokens
        self._tokens = TokenSet(
            access_token=disk.access_token,
            refresh_token=disk.refresh_token or mine.refresh_token,
            profile_arn=disk.profile_arn or mine.profile_arn,
            expires_at=disk.expires_at,
        )
        return True

    # -- refresh --------------------------------------------------------------------------

    async def _join_refresh(self) -> AuthSnapshot:
        loop = asyncio.get_running_loop()
        task = self._inflight
        if task is None or task.done() or task.get_loop() is not loop:
            task = loop.create_task(self._refresh_flight(), name=f"refresh-{self._account_id}")
            self._inflight = task
            task.add_done_callback(self._flight_done)
        return await asyncio.shield(task)

    def _flight_done(self, task: asyncio.Task[AuthSnapshot]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved here, so an unawaited failure is not reported twice

    async def _adopted_newer(self, before: str | None) -> bool:
        """Did someone else (the Kiro IDE, another worker) already put a fresh token there? Also
        when another request of this process read it in first (two first loads racing): then
        this read sees no change, yet the token in memory is no longer `before`."""
        await self._sync()
        fresh = self._tokens.access_token
        if fresh is not None and fresh != before and not self._needs_refresh(self._clock()):
            _log.info("account %s: adopted a token refreshed elsewhere", self._account_id)
            return True
        return False

    async def _refresh_flight(self) -> AuthSnapshot:
        before = self._tokens.access_token
        if await self._adopted_newer(before):
            return self._snapshot()
        started = self._clock()
        if self._last_error is not None and self._failed_at is not None:
            if started - self._failed_at < self._backoff:
                raise _copy(self._last_error)
        if self._locks is None:
            return await self._refresh_now(started)
        return await self._refresh_locked(before, started)

    async def _refresh_locked(self, before: str | None, started: datetime) -> AuthSnapshot:
        """Refresh under the store's lock for this account, so that of several workers only
        one calls Kiro; the others wait and adopt what it saved."""
        assert self._locks is not None
        name = f"refresh:{self._account_id}"
        deadline = time.monotonic() + REFRESH_TIMEOUT_S + LOCK_TTL_S
        while True:
            try:
                if await self._locks.try_lock(name, self._owner, LOCK_TTL_S):
                    break
            except StoreAway:
                return await self._refresh_unlocked(started)
            await asyncio.sleep(_LOCK_POLL_S)
            if await self._adopted_newer(before):
                return self._snapshot()
            if time.monotonic() > deadline:
                raise GatewayError(
                    ErrorKind.UPSTREAM_TIMEOUT,
                    "Another gateway worker's token refresh for this account did not finish.",
                    retryable=True,
                )
        renew = asyncio.get_running_loop().create_task(self._renew_lock(name))
        try:
            if await self._adopted_newer(before):
                return self._snapshot()
            return await self._refresh_now(started)
        finally:
            renew.cancel()
            await self._locks.unlock(name, self._owner)

    async def _refresh_unlocked(self, started: datetime) -> AuthSnapshot:
        """The store (and its lock) is away: refresh only a token that expired or that the
        upstream refused; one still valid serves until the store is back."""
        if self._usable(self._clock()) and self._tokens.access_token != self._stale:
            raise GatewayError(ErrorKind.UPSTREAM_UNAVAILABLE, "The store is away.", retryable=True)
        _log.warning("account %s: store away, token expired: refreshing unlocked", self._account_id)
        return await self._refresh_now(started)

    async def _renew_lock(self, name: str) -> None:
        """Keep the refresh lock while the refresh runs (it is short, so a holder that was
        killed frees it within LOCK_TTL_S)."""
        assert self._locks is not None
        while True:
            await asyncio.sleep(_LOCK_RENEW_S)
            with contextlib.suppress(StoreAway):  # its time-to-live keeps it a while
                await self._locks.try_lock(name, self._owner, LOCK_TTL_S)

    async def _refresh_now(self, started: datetime) -> AuthSnapshot:
        try:
            grant = await self._call_upstream()
        except GatewayError as exc:
            self._failure_count += 1
            self._last_error, self._failed_at = exc, started
            _log.warning("account %s: token refresh failed: %s", self._account_id, exc.message)
            REFRESHES.labels("failed").inc()
            raise
        REFRESHES.labels("ok").inc()
        self._apply(grant, self._clock())
        await self._home.save(self._tokens)
        return self._snapshot()

    async def _call_upstream(self) -> RefreshedTokens:
        refresh_token = self._tokens.refresh_token
        if not refresh_token:
            raise GatewayError(
                ErrorKind.UPSTREAM_AUTH,
                "The Kiro access token was refused or has expired and there is no refresh token "
                f"to renew it. {RELOGIN_HINT}",
            )
        home = self._home
        if home.auth_method != "idc":
            base = self._settings.kiro_auth_base
            return await refresh_social(
                self._http(), auth_base=base, refresh_token=refresh_token, timeout=REFRESH_TIMEOUT_S
            )
        registration = home.client_registration()
        if registration is None:
            where = f"next to {home.path}" if home.path else "with it"
            raise GatewayError(
                ErrorKind.UPSTREAM_AUTH,
                "This is an IAM Identity Center / Builder ID login, but no client registration "
                f"(clientId and clientSecret) was found {where}. {RELOGIN_HINT}",
            )
        region = home.region
        base = self._settings.kiro_oidc_base or f"https://oidc.{region}.amazonaws.com"
        return await refresh_idc(
            self._http(),
            oidc_base=base,
            registration=registration,
            refresh_token=refresh_token,
            timeout=REFRESH_TIMEOUT_S,
        )

    def _apply(self, grant: RefreshedTokens, now: datetime) -> None:
        previous = self._tokens
        expires = now + timedelta(seconds=grant.expires_in) if grant.expires_in else None
        self._tokens = TokenSet(
            access_token=grant.access_token,
            refresh_token=grant.refresh_token or previous.refresh_token,
            profile_arn=grant.profile_arn or previous.profile_arn,
            expires_at=expires,
        )
        self._refresh_count += 1
        self._last_ok_at = now
        self._last_error = self._failed_at = None
        _log.info("account %s: Kiro token refreshed", self._account_id)


def _default_home(source: CredentialSource, settings: Settings, account_id: str) -> TokenHome:
    if source.kind == "file" and source.path is not None:
        return FileTokenHome(
            TokenFileStore(
                source.path,
                default_region=settings.kiro_region or "us-east-1",
                account_id=account_id,
            )
        )
    return MemoryTokenHome(TokenSet(settings.kiro_access_token, settings.kiro_refresh_token))


def _copy(error: GatewayError) -> GatewayError:
    return GatewayError(
        error.kind,
        error.message,
        retryable=error.retryable,
        upstream_status=error.upstream_status,
        retry_after=error.retry_after,
        code=error.code,
    )
