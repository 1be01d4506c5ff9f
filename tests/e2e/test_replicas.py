"""Three gateway replicas sharing one account pool through Redis (issue 16), as real processes.

Each replica is a single-process `ki2api serve` on its own port with its own data directory;
all have the same KI2API_STORE=redis://… (a real redis-server, one per xdist worker, a key
prefix of this module's own). The accounts are put into the store itself (source "store"),
as on several machines: no token file is shared, every token lives in Redis. Kiro is the
session's emulator. The three replicas are shared by the tests of this module (one xdist
group); each test brings accounts of its own into the store and takes them out afterwards, and
waits until every replica's pool holds exactly its accounts.

Client keys: every replica accepts KEYS; the clients of replica i present KEYS[i], so a usage
row's `client_key` (`key-{i+1}`) says which replica answered it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from ki2api.state.redis_store import RedisStore
from tests.support.procs import GatewayProc, Outcome, PoolMember, chat, emulator_stats, run_cli
from tests.support.replicas import (
    on_store,
    park_account,
    remove_accounts,
    start_replicas,
    store_accounts,
    wait_pools,
)
from tests.support.stores import redis_server, unique_prefix  # noqa: F401  (a fixture)

pytestmark = pytest.mark.xdist_group("replicas")

KEYS = [f"replica-key-{i}" for i in range(4)]
MODEL = "claude-sonnet-4-20250514"


@dataclass
class Cluster:
    store: str  # KI2API_STORE of every replica (with this module's key prefix)
    emulator_url: str
    replicas: list[GatewayProc]
    root: Path

    def env(self, name: str, **extra: str) -> dict[str, str]:
        """The settings of a replica called `name` (its own data directory)."""
        return {
            "KI2API_STORE": self.store,
            "KI2API_DATA_DIR": str(self.root / f"data-{name}"),
            "KIRO_API_BASE": self.emulator_url,
            "KIRO_AUTH_BASE": self.emulator_url,
            "KIRO_OIDC_BASE": self.emulator_url,
            "KI2API_QUOTA_POLL_S": "0",
            "KI2API_THROTTLE_COOLDOWN_S": "30",
            "API_KEY": ",".join(KEYS),
            "LOG_LEVEL": "warning",
            **extra,
        }

    def add(self, ids: list[str], **kwargs: object) -> list[PoolMember]:
        """Accounts of one test, in the store and in every replica's pool."""
        members = store_accounts(
            self.emulator_url,
            self.store,
            self.root / "logins",
            ids,
            **kwargs,  # type: ignore[arg-type]
        )
        wait_pools(self.replicas, ids)
        return members

    def output(self) -> str:
        return "\n".join(f"--- {gw.url}\n{gw.output()[-2000:]}" for gw in self.replicas)


@pytest.fixture(scope="module")
def cluster(
    redis_server: str,  # noqa: F811
    emulator_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("replicas")
    for d in ("home", "cwd", "logins"):
        (root / d).mkdir()
    c = Cluster(unique_prefix(redis_server), emulator_url, [], root)
    park_account(c.store, root / "logins", emulator_url)
    c.replicas = start_replicas(root / "home", root / "cwd", [c.env(f"r{i}") for i in range(3)])
    try:
        yield c
    finally:
        for gw in c.replicas:
            gw.stop()


@pytest.fixture
def accounts_of_test(cluster: Cluster) -> Iterator[list[str]]:
    """The ids a test added (they are removed from the store after it)."""
    ids: list[str] = []
    yield ids
    remove_accounts(cluster.store, ids)


def _stats(c: Cluster, members: list[PoolMember]) -> dict[str, dict[str, int]]:
    return emulator_stats(c.emulator_url, members)


# --- 1. 300 concurrent requests while every token has expired: one refresh per account --------

REQUESTS = 300


async def _spread(c: Cluster, n: int, tag: str) -> list[Outcome]:
    """`n` concurrent chat calls, round robin over the replicas, both surfaces, both modes."""
    per = -(-n // len(c.replicas))
    limits = httpx.Limits(max_connections=per, max_keepalive_connections=per)
    clients = [httpx.AsyncClient(base_url=gw.url, timeout=60, limits=limits) for gw in c.replicas]
    try:
        calls = []
        for i in range(n):
            r = i % len(c.replicas)
            calls.append(
                chat(clients[r], f"{tag} {i}", anthropic=i % 2 == 1, stream=i % 4 >= 2, key=KEYS[r])
            )
        return list(await asyncio.gather(*calls))
    finally:
        for client in clients:
            await client.aclose()


@pytest.mark.long(12)
@pytest.mark.parametrize("how", ["expired in the store", "emulator expired them"])
def test_300_concurrent_requests_on_three_replicas_one_refresh_per_account(
    cluster: Cluster, accounts_of_test: list[str], how: str
) -> None:
    """Every token has expired: in the store (each replica sees `expiresAt` in the past), or
    only at the emulator (the tokens look valid; each replica learns it from a 403). The
    replicas refresh each account once between them (a refresh lock in Redis), the others adopt
    the saved tokens. Counted by the emulator (its successful refreshes of each account)."""
    tag = "stored" if how == "expired in the store" else "emu"
    ids = [f"{tag}-a{i}" for i in range(3)]
    accounts_of_test += ids
    members = cluster.add(ids, expired=how == "expired in the store")
    if how == "emulator expired them":
        for m in members:
            httpx.post(f"{cluster.emulator_url}/_emulator/accounts/{m.emu_id}/expire")
    before = _stats(cluster, members)

    outcomes = asyncio.run(_spread(cluster, REQUESTS, tag))

    bad = [o for o in outcomes if not o.ok]
    assert not bad, f"{len(bad)} of {REQUESTS} failed, e.g. {bad[:3]}\n{cluster.output()}"
    after = _stats(cluster, members)
    refreshes = {k: after[k]["refreshes"] - before[k]["refreshes"] for k in after}
    assert refreshes == dict.fromkeys(ids, 1), cluster.output()
    assert sum(after[k]["served"] - before[k]["served"] for k in after) >= REQUESTS

    async def saved(store: RedisStore) -> list[tuple[str, int]]:
        found = [await store.load_tokens(i) for i in ids]
        return [(t.data["accessToken"], t.version) for t in found if t is not None]

    current = httpx.get(f"{cluster.emulator_url}/_emulator/accounts").json()["accounts"]
    live = {a["id"]: a["token_file"]["accessToken"] for a in current}
    assert on_store(cluster.store, saved) == [(live[m.emu_id], 2) for m in members]


# --- 2. a cooldown one replica learnt is honoured by the others within one request -------------


def _chat_requests(c: Cluster, member: PoolMember) -> int:
    return _stats(c, [member])[member.pool_id]["chat_requests"]


def _post(gw: GatewayProc, key: str, text: str) -> int:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(
        f"{gw.url}/v1/chat/completions", json=body, headers=headers, timeout=30
    ).status_code


def _resting(c: Cluster, account_id: str) -> bool:
    async def look(store: RedisStore) -> bool:
        health = (await store.health()).get(account_id)
        return health is not None and health.cooldown_until > time.time()

    return on_store(c.store, look)


def test_a_cooldown_learnt_by_one_replica_is_honoured_by_the_others(
    cluster: Cluster, accounts_of_test: list[str]
) -> None:
    """Replica A meets Kiro's 429 on one account until it rests it (in Redis); B and C, which
    have served nothing from these accounts (so without the shared cooldown each would pick it
    first: fewest in flight, then by id), send it no request: the emulator's count of that
    account's chat requests does not move while they serve 20 requests (at most one is allowed
    for a request racing the write; one request per replica without the sharing would make
    it two or more)."""
    ids = ["cool-a0", "cool-a1", "cool-a2"]
    accounts_of_test += ids
    throttled, *_ = cluster.add(ids)
    a, b, c = cluster.replicas
    patch = {"behaviour": {"throttled": True}}
    httpx.patch(f"{cluster.emulator_url}/_emulator/accounts/{throttled.emu_id}", json=patch)
    for i in range(20):
        assert _post(a, KEYS[0], f"replica A {i}") == 200
        if _resting(cluster, throttled.pool_id):
            break
    else:
        pytest.fail(f"replica A never rested the throttled account\n{cluster.output()}")
    seen = _chat_requests(cluster, throttled)
    for i in range(20):
        gw, key = (b, KEYS[1]) if i % 2 == 0 else (c, KEYS[2])
        assert _post(gw, key, f"after the cooldown {i}") == 200
    assert _chat_requests(cluster, throttled) - seen <= 1
    for gw in cluster.replicas:  # each one says so in /health too
        pool = httpx.get(f"{gw.url}/health", headers={"x-api-key": KEYS[0]}).json()["pool"]
        resting = {p["id"]: p["cooldown_s"] for p in pool}
        assert resting[throttled.pool_id] > 0, (gw.url, resting)


# --- 3. a client key's rate limit holds across replicas -----------------------------------------


def test_a_keys_rate_limit_holds_across_replicas(
    cluster: Cluster, accounts_of_test: list[str]
) -> None:
    """`ki2api keys create --rpm 5` against the Redis store; 12 requests round robin over the
    three replicas: 5 answered, 7 refused with 429 and retry-after (the counter is one Redis
    script for every replica). The window is the UTC minute: the test starts at least 5 s
    before its end."""
    accounts_of_test.append("rpm-a0")
    cluster.add(["rpm-a0"])
    root = cluster.root
    env = {"KI2API_STORE": cluster.store, "KI2API_DATA_DIR": str(root / "data-cli")}
    made = run_cli(
        root / "home", root / "cwd", ["keys", "create", "rpm-five", "--rpm", "5", "--json"], env
    )
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["key"]
    while time.time() % 60 > 55:  # the 12 requests all in one minute window
        time.sleep(0.05)
    clients = [
        openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)
        for gw in cluster.replicas
    ]
    ok, limited = 0, []
    try:
        for i in range(12):
            try:
                clients[i % 3].chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": f"rpm {i}"}]
                )
                ok += 1
            except openai.RateLimitError as exc:
                limited.append(exc.response.headers.get("retry-after"))
    finally:
        for client in clients:
            client.close()
    assert ok == 5, (ok, limited)
    assert len(limited) == 7
    assert all(r is not None and 0 < int(r) <= 60 for r in limited), limited
