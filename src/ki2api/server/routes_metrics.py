"""GET /metrics: the Prometheus text format, for the operator only.

Off the client API: the client keys (`API_KEY`) are not accepted. It answers `Authorization:
Bearer <ADMIN_KEY>` or `Bearer <KI2API_METRICS_TOKEN>` (compared in constant time); with
neither set it is off and answers 404 like any unknown path. The counters and histograms are
`ki2api/metrics.py`'s (summed over every worker's files with `serve --workers N`); the account
gauges are read from the pool at scrape time (each worker's pool mirrors the shared store, so
any worker tells the whole story).
"""

from __future__ import annotations

import hmac
import os
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.kiro.accounts.pool import PoolAccount
from ki2api.server.chat import services_of
from ki2api.settings import Settings

__all__ = ["account_state", "router"]

router = APIRouter()

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    services = services_of(request)
    settings = services.settings
    _check_token(request, settings)
    pool = services.pool
    await pool.sync()  # what the other workers learnt, before the gauges are read
    registry = CollectorRegistry()
    registry.register(_Families(_counted(settings)))
    registry.register(_Families(_account_families(pool.accounts, pool.now())))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)


def _check_token(request: Request, settings: Settings) -> None:
    accepted = [t for t in (settings.admin_key, settings.metrics_token) if t]
    if not accepted:
        raise GatewayError(ErrorKind.NOT_FOUND, f"Unknown path {request.url.path}.")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    given = given.strip()
    ok = scheme.lower() == "bearer" and given != ""
    # every accepted token is compared (constant time each), whichever matches
    matches = [hmac.compare_digest(given.encode(), t.encode()) for t in accepted]
    if not (ok and any(matches)):
        raise GatewayError(
            ErrorKind.AUTHENTICATION,
            "/metrics needs `Authorization: Bearer` with ADMIN_KEY or KI2API_METRICS_TOKEN.",
        )


def _counted(settings: Settings) -> list[Metric]:
    """The counters, histograms and live gauges: this process's, or every worker's files."""
    path = settings.metrics_dir
    if path is None or not path.is_dir():
        return list(REGISTRY.collect())
    _forget_dead_workers(path)
    collector = MultiProcessCollector(None, path=str(path))  # type: ignore[no-untyped-call]
    return list(collector.collect())  # type: ignore[no-untyped-call]


def _forget_dead_workers(path: Path) -> None:
    """A worker that died (and was replaced) left its live gauges (streams open) behind."""
    for f in path.glob("gauge_live*.db"):
        m = _LIVE_GAUGE_FILE.fullmatch(f.name)
        if m is not None and not _alive(int(m.group(1))):
            mark_process_dead(int(m.group(1)), str(path))  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def account_state(account: PoolAccount, now: float) -> tuple[str, str]:
    """(state, reason): enabled, resting (cooling down) or disabled, and why."""
    if not account.record.enabled:
        return "disabled", account.record.disabled_reason or ""
    if account.health.cooldown_until > now:
        return "resting", account.health.reason or ""
    return "enabled", ""


def _account_families(accounts: Iterable[PoolAccount], now: float) -> list[Metric]:
    states = GaugeMetricFamily(
        "ki2api_account_state",
        "1 for each account, labelled with its state (enabled, resting, disabled) and reason",
        labels=["account", "state", "reason"],
    )
    counts = GaugeMetricFamily(
        "ki2api_accounts", "Accounts by state and reason", labels=["state", "reason"]
    )
    remaining = GaugeMetricFamily(
        "ki2api_account_quota_remaining",
        "Credits left this period (getUsageLimits), where known",
        labels=["account"],
    )
    limit = GaugeMetricFamily(
        "ki2api_account_quota_limit", "Credits of the period, where known", labels=["account"]
    )
    tally: Counter[tuple[str, str]] = Counter()
    for account in accounts:
        state, reason = account_state(account, now)
        tally[(state, reason)] += 1
        states.add_metric([account.id, state, reason], 1)
        if account.health.quota_remaining is not None:
            remaining.add_metric([account.id], account.health.quota_remaining)
        if account.health.quota_limit is not None:
            limit.add_metric([account.id], account.health.quota_limit)
    for (state, reason), n in sorted(tally.items()):
        counts.add_metric([state, reason], n)
    return [states, counts, remaining, limit]


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families
