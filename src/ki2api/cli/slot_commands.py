"""The concurrency cap and pace of `ki2api accounts add|set|list` (kiro/accounts/slots.py).

`--max-inflight N` (0: no cap) and `--pace RPM` (0: no pace) store the account's own limits;
`default` goes back to the pool's (KI2API_ACCOUNT_MAX_INFLIGHT, KI2API_ACCOUNT_PACE_RPM).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any

from ki2api.kiro.accounts.pacing import limits_of
from ki2api.settings import Settings
from ki2api.state.base import AccountRecord, StateStore

__all__ = ["add_slot_options", "set_slot_limits", "slot_changes", "slot_view"]

_DEFAULT = "default"


def _cap(raw: str) -> int | str:
    if raw.strip().lower() == _DEFAULT:
        return _DEFAULT
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number or 'default'") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (no cap) or more")
    return value


def _rpm(raw: str) -> float | str:
    if raw.strip().lower() == _DEFAULT:
        return _DEFAULT
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number or 'default'") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError("must be 0 (no pace) or more")
    return value


def add_slot_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-inflight",
        type=_cap,
        metavar="N",
        help="requests in flight at most on this account (0: no cap; default: the pool's)",
    )
    parser.add_argument(
        "--pace",
        type=_rpm,
        metavar="RPM",
        help="request starts per minute at most, spread evenly (0: none; default: the pool's)",
    )


def slot_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The record fields the flags given change (None: back to the pool's default)."""
    changes: dict[str, Any] = {}
    for flag, field in (("max_inflight", "max_inflight"), ("pace", "pace_rpm")):
        value = getattr(args, flag, None)
        if value is not None:
            changes[field] = None if value == _DEFAULT else value
    return changes


async def set_slot_limits(
    settings: Settings, store: StateStore, record: AccountRecord, changes: dict[str, Any]
) -> str:
    updated = dataclasses.replace(record, **changes)
    await store.upsert_account(updated)
    return f"{record.id}: {slot_view(settings, updated, None)['limits']}"


def slot_view(settings: Settings, record: AccountRecord, inflight: int | None) -> dict[str, Any]:
    """An account's cap, pace and requests in flight (as counted by the store's ledger), for
    `accounts list`."""
    limits = limits_of(
        record.max_inflight,
        record.pace_rpm,
        settings.account_max_inflight,
        settings.account_pace_rpm,
    )
    cap = f"cap {limits.cap}" if limits.cap else "no cap"
    if record.max_inflight is None:
        cap += " (pool default)"
    pace = f"pace {limits.rpm:g}/min" if limits.interval_s else "no pace"
    text = f"{cap}, {pace}"
    return {
        "max_inflight": limits.cap,
        "pace_rpm": limits.rpm,
        "inflight": inflight,
        "limits": text,
        "slots": f"{'-' if inflight is None else inflight}/{limits.cap or '-'}",
    }
