"""A pool of emulator accounts for the gateway: one token file each under a `KIRO_CREDS_DIR`.

Each member's token file goes to `<where>/creds/<pool_id>/kiro-auth-token.json`, so the gateway
names the account `pool_id` (chosen here: `p0`, `p1`, ... in the order given, which is also the
order the pool breaks ties in). The emulator knows the same account by `emu_id`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from kiro_emulator.credentials import write_credentials
from tests.conftest import API_KEY, Account, Gateway

__all__ = [
    "Member",
    "chat_requests",
    "emulator_counters",
    "health_of",
    "make_pool",
    "patch_behaviour",
    "requests_of",
    "start_pool_gateway",
    "wait_for",
]


@dataclass(frozen=True)
class Member:
    pool_id: str  # the gateway's name for the account
    emu_id: str  # the emulator's name for the same login
    account: Account


def make_pool(
    emulator_url: str,
    where: Path,
    behaviours: Sequence[dict[str, Any]],
    *,
    expired: Sequence[bool] = (),
) -> list[Member]:
    """New emulator accounts (one per behaviour) with their token files in `where/creds`.

    `expired[i]` true: member i's access token has already expired when this returns (its
    refreshed tokens would last an hour).
    """
    members: list[Member] = []
    for i, behaviour in enumerate(behaviours):
        r = httpx.post(
            f"{emulator_url}/_emulator/accounts",
            json={"count": 1, "auth_method": "social", "behaviour": behaviour},
        )
        r.raise_for_status()
        data = r.json()["accounts"][0]
        if i < len(expired) and expired[i]:  # expired at the emulator now, and so in the file
            r = httpx.post(f"{emulator_url}/_emulator/accounts/{data['id']}/expire")
            r.raise_for_status()
            data = r.json()
        pool_id = f"p{i}"
        [path] = write_credentials(where / "creds", [{**data, "id": pool_id}])
        members.append(Member(pool_id, data["id"], Account(data["id"], path, data)))
    return members


def start_pool_gateway(
    gateway_factory: Any, members: Sequence[Member], where: Path, **overrides: Any
) -> Gateway:
    """A gateway serving exactly `members` (from `where/creds`; no single token file)."""
    gw: Gateway = gateway_factory(
        members[0].account, kiro_creds_dir=where / "creds", kiro_creds_file=None, **overrides
    )
    assert {a["id"] for a in health_of(gw).values()} == {m.pool_id for m in members}
    return gw


def patch_behaviour(emulator_url: str, emu_id: str, **behaviour: Any) -> None:
    r = httpx.patch(f"{emulator_url}/_emulator/accounts/{emu_id}", json={"behaviour": behaviour})
    r.raise_for_status()


def emulator_counters(emulator_url: str, member: Member) -> dict[str, int]:
    stats: dict[str, Any] = httpx.get(f"{emulator_url}/_emulator/stats").json()
    counters: dict[str, int] = stats["accounts"][member.emu_id]
    return counters


def chat_requests(emulator_url: str, member: Member) -> int:
    """Every authenticated chat call the emulator received for this account (errors too)."""
    return emulator_counters(emulator_url, member)["chat_requests"]


def requests_of(emulator_url: str, members: Sequence[Member]) -> list[dict[str, Any]]:
    """The emulator's logged chat requests of these accounts, oldest first."""
    ids = {m.emu_id for m in members}
    r = httpx.get(f"{emulator_url}/_emulator/requests", params={"limit": 256})
    return [
        q
        for q in r.json()["requests"]
        if q.get("account") in ids and q["path"].endswith("generateAssistantResponse")
    ]


def health_of(gw: Gateway) -> dict[str, dict[str, Any]]:
    """`GET /health`'s accounts, by pool id."""
    body = httpx.get(f"{gw.url}/health", headers={"x-api-key": API_KEY}).json()
    return {a["id"]: a for a in body["pool"]}


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())
