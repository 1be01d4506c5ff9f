"""`--proxy` of `ki2api accounts add` / `set`, and the network paths `accounts list` shows.

An account's own proxy is checked (core/proxy.py: scheme, host, port) and refused when
KI2API_MAX_ACCOUNTS_PER_PROXY accounts already chose one of the same path
(kiro/accounts/proxies.py). A proxy is shown as scheme://host:port, never with its credentials.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ki2api.core.proxy import ProxyURLError, parse_proxy
from ki2api.kiro.accounts.proxies import assign, crowd_warning, crowded, limit_refusal
from ki2api.settings import Settings
from ki2api.state.base import AccountRecord, StateStore

__all__ = [
    "PROXY_HELP",
    "ProxyRefused",
    "add_proxy_option",
    "network_paths",
    "network_warnings",
    "proxy_arg",
    "set_proxy",
    "usable_proxy",
]

PROXY_HELP = (
    "outbound proxy of this account: http://[user:pass@]host:port, https://…, "
    "socks5://[user:pass@]host:port or socks5h://…; `none`: the pool's default (KI2API_PROXY)"
)
_NONE = ""  # what `--proxy none` parses to: no proxy of its own


class ProxyRefused(Exception):
    """The proxy may not be used (over the per-proxy limit); the message says why."""


def proxy_arg(raw: str) -> str:
    """argparse type of `--proxy`: a checked URL, or "" for `none`."""
    if raw.strip().lower() == "none":
        return _NONE
    try:
        parse_proxy(raw)
    except ProxyURLError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return raw.strip()


def add_proxy_option(parser: Any) -> None:
    parser.add_argument("--proxy", type=proxy_arg, metavar="URL|none", help=PROXY_HELP)


async def usable_proxy(
    settings: Settings, store: StateStore, account_id: str, proxy: str | None
) -> str | None:
    """`proxy` to keep as the account's own (None: none), after the per-proxy limit check."""
    if not proxy:
        return None
    refusal = limit_refusal(
        await store.list_accounts(), account_id, parse_proxy(proxy), settings.max_accounts_per_proxy
    )
    if refusal is not None:
        raise ProxyRefused(refusal)
    return proxy


async def set_proxy(
    settings: Settings, store: StateStore, record: AccountRecord, proxy: str
) -> str:
    """Give `record` the proxy (or "" for none); returns the line to print."""
    own = await usable_proxy(settings, store, record.id, proxy)
    await store.upsert_account(dataclasses.replace(record, proxy=own))
    path = network_paths(settings, await store.list_accounts()).get(record.id, "direct")
    return f"{record.id}: network path {path}" + ("" if own else " (no proxy of its own)")


def network_paths(settings: Settings, records: list[AccountRecord]) -> dict[str, str]:
    """Each account's network path as shown: scheme://host:port (a login as a short hash),
    or "direct"."""
    defaults = [parse_proxy(url) for url in settings.proxies]
    paths = assign(records, defaults, settings.max_accounts_per_proxy)
    return {account_id: path.shown for account_id, path in paths.items()}


def network_warnings(settings: Settings, records: list[AccountRecord]) -> list[str]:
    limit = settings.max_accounts_per_proxy
    defaults = [parse_proxy(url) for url in settings.proxies]
    paths = assign(records, defaults, limit)
    return [crowd_warning(path, n, limit) for path, n in crowded(paths, limit)]
