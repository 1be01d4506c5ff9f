"""Signs of trouble on an account: acted on, remembered and shown (docs/accounts.md, "Trouble
signs"; docs/kiro-protocol.md §6.2, §8).

* A 429 about suspicious activity, the 5-minute credit window and the per-user rate: the policy
  rests the account (kiro/accounts/policy.py, `SIGN_CODES`); here the suspicious one is logged
  once per event and shown as a warning while its rest lasts.
* A likely **location block**: Kiro answers `INVALID_MODEL_ID` for a Claude model the account
  should have (its live model list offers it, or another Claude model was refused on the same
  account shortly before). Since 2026-05 Kiro refuses Claude models to mainland-China addresses
  while other models still work (§8). The error becomes a PERMISSION error naming the cause and
  the fix, the request fails over, and the account gets no Claude request for
  `KI2API_LOCATION_REST_S` (other models still go to it): `Health.claude_rest_until`.
* A **suspension**: the pool keeps the shape of the last few requests of each account (when,
  model, body bytes, requests in flight on it: never content) and stores it with the suspension
  (`Health.suspension`), so `accounts list` and `/health` show what preceded it, after a
  restart too. The ring is per process: with several workers, the worker that saw the
  suspension records its own view.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.kiro.accounts.policy import STUCK_THROTTLE, Action
from ki2api.kiro.classify import LOCATION_BLOCK_CODE, SUSPICIOUS_CODE
from ki2api.state.base import Health, StateStore

__all__ = [
    "RING_SIZE",
    "RequestShape",
    "Trouble",
    "TroubleHost",
    "describe_suspension",
    "is_claude",
    "location_error",
    "trouble_view",
]

_log = logging.getLogger(__name__)
RING_SIZE = 5  # request shapes kept per account
_REFUSAL_MEMORY_S = 600.0  # two Claude models refused within this time: a location block
_SUSPENDED = "suspended"  # policy's reason for a suspension (account_suspended)


@dataclass(frozen=True, slots=True)
class RequestShape:
    """One request sent to an account, without its content."""

    at: float  # when it was sent (epoch seconds)
    model: str | None  # the Kiro model id
    bytes: int  # the request body's size
    inflight: int  # requests in flight on the account then, this one included


class TroubleHost(Protocol):
    """What this module reads of a pool account (kiro/accounts/pool.py PoolAccount)."""

    @property
    def id(self) -> str: ...

    health: Health


def is_claude(model: str | None) -> bool:
    """A Claude model by its Kiro id ("claude-sonnet-4.5", "CLAUDE_3_7_SONNET_…")."""
    return bool(model) and str(model).lower().startswith("claude")


def location_error(model: str | None) -> GatewayError:
    """What a client is told when a Claude model is refused for the account's location."""
    return GatewayError(
        ErrorKind.PERMISSION,
        f"Kiro refused the Claude model {model or ''} (INVALID_MODEL_ID) although the account "
        "offers it: likely a location block. Since 2026-05 Kiro refuses Claude models to "
        "mainland-China IP addresses while other models still work. Send this account's "
        "traffic through a proxy or network outside the blocked region, or use a non-Claude "
        "model.",
        upstream_status=400,
        code=LOCATION_BLOCK_CODE,
    )


def _utc(at: float, fmt: str = "%Y-%m-%d %H:%M:%S UTC") -> str:
    return datetime.fromtimestamp(at, UTC).strftime(fmt)


class Trouble:
    """The pool's memory of trouble signs (one per AccountPool)."""

    def __init__(self, *, location_rest_s: float = 1800.0) -> None:
        self.location_rest_s = location_rest_s
        self._ring: dict[str, deque[RequestShape]] = {}
        self._refused: dict[str, tuple[str, float]] = {}  # account -> Claude model refused, when
        self._logged: dict[tuple[str, str], float] = {}  # (account, sign) -> rest end logged

    # the requests' shapes ------------------------------------------------------------------------
    def note_request(
        self, account_id: str, *, model: str | None, size: int, inflight: int, now: float
    ) -> None:
        ring = self._ring.setdefault(account_id, deque(maxlen=RING_SIZE))
        ring.append(RequestShape(now, model, size, inflight))

    def shapes(self, account_id: str) -> list[RequestShape]:
        return list(self._ring.get(account_id, ()))

    # location blocks ----------------------------------------------------------------------------
    def reframe(
        self,
        account_id: str,
        err: GatewayError,
        model: str | None,
        offered: frozenset[str] | None,
        now: float,
    ) -> GatewayError:
        """`err`, or the location-block error when `err` is Kiro's INVALID_MODEL_ID for a
        Claude model this account should have (its live list offers it, or another Claude
        model was refused on it within the last few minutes)."""
        if not (
            err.kind is ErrorKind.MODEL_NOT_FOUND
            and err.upstream_status == 400
            and is_claude(model)
        ):
            return err
        assert model is not None
        prior = self._refused.get(account_id)
        self._refused[account_id] = (model, now)
        listed = offered is not None and model in offered
        another = prior is not None and prior[0] != model and now - prior[1] <= _REFUSAL_MEMORY_S
        return location_error(model) if listed or another else err

    def blocked(self, model: str | None, accounts: Iterable[TroubleHost], now: float) -> set[str]:
        """Ids of the accounts resting from Claude models, when `model` is one."""
        if not is_claude(model):
            return set()
        return {a.id for a in accounts if a.health.claude_rest_until > now}

    # after a failure ------------------------------------------------------------------------------
    async def failed(
        self, store: StateStore, account: TroubleHost, err: GatewayError, action: Action, now: float
    ) -> None:
        """Remember and report what `action` (the policy's answer to `err`) says of the account.
        Called by the pool before it applies the action's rest."""
        if action.reason == LOCATION_BLOCK_CODE:
            until = now + self.location_rest_s
            account.health = dataclasses.replace(account.health, claude_rest_until=until)
            await store.put_health(account.health)
            if self._first(account.id, LOCATION_BLOCK_CODE, until, now):
                _log.warning(
                    "account %s: likely location block: %s Claude requests go to other accounts "
                    "for %.0f s; other models still use it.",
                    account.id,
                    err.message,
                    self.location_rest_s,
                )
        elif action.reason == SUSPICIOUS_CODE and action.cooldown_until is not None:
            if self._first(account.id, SUSPICIOUS_CODE, action.cooldown_until, now):
                _log.warning(
                    "account %s: Kiro reports suspicious activity (429): resting %.0f s "
                    "(KI2API_SUSPICIOUS_REST_S). Fewer concurrent requests, a slower pace or a "
                    "proxy of its own may help. %s",
                    account.id,
                    action.cooldown_until - now,
                    err.message,
                )
        elif action.disable and action.reason == _SUSPENDED:
            await self._suspended(store, account, now)

    def _first(self, account_id: str, sign: str, until: float, now: float) -> bool:
        """True once per event: when no rest of this sign was logged that still lasts."""
        if self._logged.get((account_id, sign), 0.0) > now:
            return False
        self._logged[(account_id, sign)] = until
        return True

    async def _suspended(self, store: StateStore, account: TroubleHost, now: float) -> None:
        shapes = self.shapes(account.id)
        record = {"at": now, "recent": [dataclasses.asdict(s) for s in shapes]}
        account.health = dataclasses.replace(account.health, suspension=json.dumps(record))
        await store.put_health(account.health)
        _log.warning(
            "account %s suspended at %s; the requests before it: %s",
            account.id,
            _utc(now),
            "; ".join(_shape_text(s) for s in shapes) or "none recorded in this process",
        )


def _shape_text(s: RequestShape) -> str:
    return f"{_utc(s.at, '%H:%M:%S')} {s.model or '?'} {s.bytes} B, {s.inflight} in flight"


def _suspension(health: Health) -> dict[str, Any] | None:
    if not health.suspension:
        return None
    try:
        data = json.loads(health.suspension)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def describe_suspension(health: Health) -> str | None:
    """One line: when the account was suspended and the shape of the requests before it."""
    data = _suspension(health)
    if data is None or not isinstance(data.get("at"), int | float):
        return None
    recent = [RequestShape(**r) for r in data.get("recent", []) if isinstance(r, dict)]
    shapes = "; ".join(_shape_text(s) for s in recent) or "none recorded"
    return f"suspended at {_utc(data['at'])}; the requests before it: {shapes}"


def _warnings(health: Health, now: float) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    resting = health.cooldown_until > now
    if resting and health.reason == SUSPICIOUS_CODE:
        out.append(
            (
                SUSPICIOUS_CODE,
                "Kiro reported suspicious activity on this account (429): resting until "
                f"{_utc(health.cooldown_until)}",
            )
        )
    if resting and health.reason == STUCK_THROTTLE:
        out.append(
            (
                STUCK_THROTTLE,
                f"{health.strikes} 429s in a row did not lift: likely out of quota or flagged",
            )
        )
    if health.claude_rest_until > now:
        out.append(
            (
                LOCATION_BLOCK_CODE,
                "likely location block: Kiro refuses Claude models (INVALID_MODEL_ID) to this "
                "account's network; no Claude request goes to it until "
                f"{_utc(health.claude_rest_until)}; use a proxy or network outside the blocked "
                "region",
            )
        )
    return out


def trouble_view(health: Health, now: float) -> dict[str, Any]:
    """The trouble fields of an account's status (/health, `accounts list --json`): `warning`
    (one text, None when all is well), `warnings` (their codes) and `suspension` (when it was
    suspended and the shape of the requests before it; None if never recorded)."""
    found = _warnings(health, now)
    return {
        "warning": "; ".join(text for _, text in found) or None,
        "warnings": [code for code, _ in found],
        "suspension": _suspension(health),
    }
