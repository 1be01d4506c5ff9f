"""The network path of each account: its own proxy, one of the pool's default proxies, or none.

Precedence (docs/accounts.md, "Outbound proxies"): the account's own proxy (`accounts add/set
--proxy`), else one of KI2API_PROXY's, else HTTPS_PROXY / NO_PROXY of the environment (shown
as "direct"). With several default proxies each account gets one stably: accounts are taken
oldest first, each goes to the first proxy in its own ranking (a hash of its id and the proxy)
that has room under KI2API_MAX_ACCOUNTS_PER_PROXY, counting the accounts that chose that proxy
themselves first; when none has room, to the first of its ranking (and a warning says so). An
account added later never moves an older one. `assign`, `crowded` and `limit_refusal` are
pure; `NetworkRoutes` keeps the current paths and the HTTP clients of the proxies.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import httpx

from ki2api.core.proxy import ProxyURL, parse_proxy
from ki2api.http_client import create_proxied_client
from ki2api.settings import Settings
from ki2api.state.base import AccountRecord

__all__ = [
    "DIRECT",
    "NetworkPath",
    "NetworkRoutes",
    "assign",
    "crowd_warning",
    "crowded",
    "limit_refusal",
]

DIRECT = "direct"


@dataclass(frozen=True)
class NetworkPath:
    proxy: ProxyURL | None
    origin: str  # "account" (its own), "default" (KI2API_PROXY) or "direct"

    @property
    def key(self) -> str:
        """Accounts with the same key share one network path (an exit address)."""
        return DIRECT if self.proxy is None else self.proxy.path_key

    @property
    def shown(self) -> str:
        """Safe to show: scheme://host:port, never the credentials."""
        return DIRECT if self.proxy is None else self.proxy.shown


def _rank(account_id: str, proxy: ProxyURL) -> bytes:
    return hashlib.sha256(f"{account_id}\0{proxy.path_key}".encode()).digest()


def assign(
    records: Iterable[AccountRecord], defaults: Sequence[ProxyURL], limit: int
) -> dict[str, NetworkPath]:
    """The path of every account (see the module docstring); `limit` 0: no limit."""
    ordered = sorted(records, key=lambda r: (r.created_at, r.id))
    own = {r.id: parse_proxy(r.proxy) for r in ordered if r.proxy}
    load = Counter(p.path_key for p in own.values())
    paths: dict[str, NetworkPath] = {}
    for record in ordered:
        mine = own.get(record.id)
        if mine is not None:
            paths[record.id] = NetworkPath(mine, "account")
            continue
        if not defaults:
            paths[record.id] = NetworkPath(None, DIRECT)
            continue
        ranked = sorted(defaults, key=lambda p: _rank(record.id, p))
        pick = next((p for p in ranked if limit <= 0 or load[p.path_key] < limit), ranked[0])
        load[pick.path_key] += 1
        paths[record.id] = NetworkPath(pick, "default")
    return paths


def crowded(paths: dict[str, NetworkPath], limit: int) -> list[tuple[str, int]]:
    """(path shown, accounts on it) for every path with more accounts than `limit`."""
    if limit <= 0:
        return []
    count = Counter(p.key for p in paths.values())
    shown = {p.key: p.shown for p in paths.values()}
    return sorted((shown[k], n) for k, n in count.items() if n > limit)


def crowd_warning(path: str, n: int, limit: int) -> str:
    return (
        f"{n} accounts share the network path {path} (KI2API_MAX_ACCOUNTS_PER_PROXY={limit}): "
        "accounts seen from one address may be flagged together; give them proxies of their own"
    )


def limit_refusal(
    records: Iterable[AccountRecord], account_id: str, proxy: ProxyURL, limit: int
) -> str | None:
    """Why `account_id` may not take `proxy` as its own (None: it may): `limit` accounts
    already chose a proxy of the same path."""
    if limit <= 0:
        return None
    taken = sum(
        1
        for r in records
        if r.id != account_id and r.proxy and parse_proxy(r.proxy).path_key == proxy.path_key
    )
    if taken < limit:
        return None
    return (
        f"the proxy {proxy.shown} already serves {taken} account(s), the limit "
        f"(KI2API_MAX_ACCOUNTS_PER_PROXY={limit}): use another proxy, or raise the limit"
    )


class NetworkRoutes:
    """The current path of each account (updated whenever the pool reloads its accounts), and
    one httpx client per proxy for refresh, quota, models and profiles (made when first used;
    the shared client serves the accounts without a proxy)."""

    def __init__(self, settings: Settings, shared: httpx.AsyncClient) -> None:
        self._settings = settings
        self._shared = shared
        self._defaults = tuple(parse_proxy(url) for url in settings.proxies)
        self.limit = settings.max_accounts_per_proxy
        self._paths: dict[str, NetworkPath] = {}
        self._clients: dict[ProxyURL, httpx.AsyncClient] = {}

    def update(self, records: Iterable[AccountRecord]) -> None:
        self._paths = assign(records, self._defaults, self.limit)

    def path_of(self, account_id: str) -> NetworkPath:
        return self._paths.get(account_id) or NetworkPath(None, DIRECT)

    def proxy_of(self, account_id: str) -> ProxyURL | None:
        return self.path_of(account_id).proxy

    def http_for(self, account_id: str) -> httpx.AsyncClient:
        """The httpx client of the account's path (looked up at each call: a path may change)."""
        proxy = self.proxy_of(account_id)
        if proxy is None:
            return self._shared
        client = self._clients.get(proxy)
        if client is None:
            client = self._clients[proxy] = create_proxied_client(self._settings, proxy)
        return client

    def warnings(self) -> list[str]:
        return [crowd_warning(p, n, self.limit) for p, n in crowded(self._paths, self.limit)]

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
