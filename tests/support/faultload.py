"""Clients hammering a gateway whose upstream fails at random (issue 9's fault soak).

`drive()` runs `clients` clients back to back (no back-off: a failed request is followed at
once by the next) for a while, each request a complete chat call on one of the two surfaces,
streaming or not, judged by `tests.support.procs.chat` (a complete answer, or a clean error in
the client's dialect). `fault_pool()` makes a pool of emulator accounts that each fail a share
of their calls with a random fault of the given kinds. The bench's fault row uses the same two.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

from tests.support.procs import Outcome, PoolMember, chat, emulator_stats, make_pool

T = TypeVar("T")

__all__ = [
    "SOAK_FAULTS",
    "FaultRun",
    "at_low_priority",
    "drive",
    "fault_pool",
    "set_fault_rate",
    "upstream_counts",
]

# The transient and account-level faults of issue 9's soak (not quota: it rests an account
# until next month; not stalls: they are timeouts, measured in their own tests).
SOAK_FAULTS = (
    "throttled",
    "server_error",
    "unavailable",
    "high_load",
    "empty_stream",
    "truncate",
    "drop_connection",
)


def at_low_priority(work: Callable[[], T], niceness: int = 10) -> T:
    """`work()` in a thread of its own at a lower CPU priority (Linux nice is per thread, and
    the threads it starts inherit it), so a soak that runs for a fixed time takes the CPU the
    rest of the suite leaves idle instead of a fixed share of it: it lasts as long, with as many
    clients and faults, and only its request count depends on the machine's spare time."""
    out: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
        except (OSError, AttributeError):
            pass  # not Linux, or not allowed: run at the normal priority
        try:
            out.append(work())
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="low-priority-soak")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return out[0]


@dataclass
class FaultRun:
    outcomes: list[Outcome] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def total(self) -> int:
        return len(self.outcomes)

    @property
    def ok(self) -> int:
        return sum(o.ok for o in self.outcomes)

    @property
    def success_rate(self) -> float:
        return self.ok / self.total if self.total else 0.0

    def statuses(self) -> Counter[int]:
        return Counter(o.status for o in self.outcomes if not o.ok)

    def problems(self) -> list[str]:
        return [o.problem for o in self.outcomes if o.problem]


def fault_pool(
    emulator_url: str,
    folder: Path,
    ids: Sequence[str],
    *,
    rate: float,
    faults: Sequence[str] = SOAK_FAULTS,
    seed: int = 9000,
) -> list[PoolMember]:
    """Accounts (token files under `folder`) each failing `rate` of their calls at random."""
    members = make_pool(emulator_url, folder, ids)
    set_fault_rate(emulator_url, members, rate, faults=faults, seed=seed)
    return members


def set_fault_rate(
    emulator_url: str,
    members: Sequence[PoolMember],
    rate: float,
    *,
    faults: Sequence[str] = SOAK_FAULTS,
    seed: int = 9000,
) -> None:
    for n, m in enumerate(members):
        behaviour = {
            "fault_rate": rate,
            "faults": list(faults),
            "fault_seed": seed + n,
            "usage_limit": 1_000_000,  # a paid plan: getUsageLimits never shows them spent
        }
        r = httpx.patch(
            f"{emulator_url}/_emulator/accounts/{m.emu_id}", json={"behaviour": behaviour}
        )
        r.raise_for_status()


def upstream_counts(emulator_url: str, members: Sequence[PoolMember]) -> tuple[int, int]:
    """(chat calls, faults injected) the emulator counted for `members` so far."""
    stats = emulator_stats(emulator_url, members).values()
    return sum(s["chat_requests"] for s in stats), sum(s["faults"] for s in stats)


async def drive(
    url: str,
    key: str,
    *,
    clients: int,
    duration_s: float,
    timeout_s: float = 60.0,
    label: str = "fault",
) -> FaultRun:
    """`clients` clients sending requests back to back for `duration_s` seconds."""
    run = FaultRun()
    deadline = time.monotonic() + duration_s
    # An idle connection is dropped by the client before the server's keep-alive timeout
    # (uvicorn's 5 s) can close it: at equal timeouts (httpx's default is 5 s too) a request
    # sent on a connection the server is closing at that instant fails with a ReadError, a race
    # of the client's pool, not a failure of the gateway's.
    limits = httpx.Limits(
        max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=2.0
    )

    async def client(c: httpx.AsyncClient, n: int) -> None:
        i = 0
        while time.monotonic() < deadline:
            k = n + clients * i
            i += 1
            try:
                outcome = await chat(
                    c, f"{label} {k}", anthropic=k % 2 == 1, stream=k % 4 >= 2, key=key
                )
            except httpx.HTTPError as exc:  # a hang (client timeout) or a broken connection
                outcome = Outcome(0, False, f"request {k}: {type(exc).__name__}: {exc}")
            run.outcomes.append(outcome)

    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as c:
        await asyncio.gather(*(client(c, n) for n in range(clients)))
    run.elapsed_s = time.monotonic() - started
    return run
