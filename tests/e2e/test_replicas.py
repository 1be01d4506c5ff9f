"""Three gateway replicas sharing one account pool through Redis (issue 16), as real processes.

Each replica is a single-process `ki2api serve` on its own port with its own data directory;
all have the same KI2API_STORE=redis://… (a real redis-server, one per xdist worker, a key
prefix of this module's own). The accounts are put into the store itself (source "store"),
as on several machines: no token file is shared, every token lives in Redis. Kiro is the
session's emulator. The three replicas are shared by the tests of this module (one xdist
group; started once per session, idle once these tests are done); each test brings accounts
of its own into the store and takes them out afterwards, and waits until every replica's pool
holds exactly its accounts. A disabled account ("parked") stays in the store throughout:
`ki2api serve` refuses to start without any account.

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

from ki2api.kiro.login.credentials import LOCK_TTL_S
from ki2api.kiro.login.token_file import parse_expires_at
from ki2api.state.base import StoredTokens
from ki2api.state.redis_store import RedisStore
from tests.support.procs import GatewayProc, Outcome, PoolMember, chat, emulator_stats, run_cli
from tests.support.replicas import (
    Call,
    HoldAuth,
    Load,
    Watch,
    park_account,
    remove_accounts,
    start_replicas,
    store_accounts,
    until,
    wait_pools,
)
from tests.support.stores import on_redis, redis_server, unique_prefix  # noqa: F401  (a fixture)

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

    def add(self, ids: list[str], *, expired: bool = False) -> list[PoolMember]:
        """Accounts of one test, in the store and in every replica's pool."""
        logins = self.root / "logins"
        members = store_accounts(self.emulator_url, self.store, logins, ids, expired=expired)
        wait_pools(self.replicas, ids)
        return members

    def output(self) -> str:
        return "\n".join(f"--- {gw.url}\n{gw.output()[-2000:]}" for gw in self.replicas)


@pytest.fixture(scope="session")  # not "module": `long` tests run first, apart from the rest
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
            httpx.post(
                f"{cluster.emulator_url}/_emulator/accounts/{m.emu_id}/expire"
            ).raise_for_status()
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
    assert on_redis(cluster.store, saved) == [(live[m.emu_id], 2) for m in members]


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

    return on_redis(c.store, look)


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
    url = f"{cluster.emulator_url}/_emulator/accounts/{throttled.emu_id}"
    httpx.patch(url, json=patch).raise_for_status()
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


def _twelve_requests(c: Cluster, name: str) -> tuple[int, list[str | None], bool]:
    """A new key with --rpm 5, then 12 requests round robin over the replicas: how many were
    answered, the retry-after of each refused one, and whether all fell in one minute window
    (they start at least 15 s before the minute's end)."""
    root = c.root
    env = {"KI2API_STORE": c.store, "KI2API_DATA_DIR": str(root / "data-cli")}
    args = ["keys", "create", name, "--rpm", "5", "--json"]
    made = run_cli(root / "home", root / "cwd", args, env)
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["key"]
    while time.time() % 60 > 45:
        time.sleep(0.05)
    clients = [
        openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0) for gw in c.replicas
    ]
    ok, limited, started = 0, [], time.time()
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
    return ok, limited, started // 60 == time.time() // 60


def test_a_keys_rate_limit_holds_across_replicas(
    cluster: Cluster, accounts_of_test: list[str]
) -> None:
    """`ki2api keys create NAME --rpm 5` against the Redis store; 12 requests round robin over
    the three replicas (openai SDK, no retries): 5 answered, 7 refused with 429 and
    retry-after (the counter is one Redis script for every replica). The window is the UTC
    minute: a machine so slow that the 12 requests crossed a minute's end tries once more."""
    accounts_of_test.append("rpm-a0")
    cluster.add(["rpm-a0"])
    ok, limited, one_window = _twelve_requests(cluster, "rpm-five")
    if not one_window:
        ok, limited, one_window = _twelve_requests(cluster, "rpm-five-again")
    assert one_window
    assert ok == 5, (ok, limited)
    assert len(limited) == 7
    assert all(r is not None and 0 < int(r) <= 60 for r in limited), limited


# --- 4. one replica SIGKILLed mid-load while it holds a refresh lock ------------------------------

FLUSH_INTERVAL_S = 0.2  # UsageLog's default: a killed replica loses at most what it had not flushed
SLACK_S = 0.3  # for a busy machine, as tests/e2e/test_usage_on_stop.py
PACE_S = 0.1  # each client's pause between its requests


async def _loop(client: httpx.AsyncClient, i: int, load: Load, stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            text = f"kill {i}.{id(client) % 997}.{n}"
            outcome: Outcome | None = await chat(
                client, text, anthropic=n % 2 == 1, stream=i != 3 and n % 3 == 2, key=KEYS[i]
            )
        except httpx.TransportError:
            outcome = None
        load.calls[i].append(Call(started, time.monotonic(), outcome))
        if outcome is None:
            return  # the killed replica: nothing to send to any more
        n += 1
        await asyncio.sleep(PACE_S)  # a steady load, not a flood: the CPU is shared


async def _kill_mid_load(
    c: Cluster, killed: GatewayProc, hold: HoldAuth, watch: Watch, load: Load
) -> str:
    """The load on the survivors (replicas 0 and 1) and the replica to kill; returns the id of
    the account whose refresh lock the killed replica held."""
    stop = asyncio.Event()
    targets = {0: c.replicas[0], 1: c.replicas[1], 3: killed}
    limits = httpx.Limits(max_connections=8)
    clients = {
        i: httpx.AsyncClient(base_url=gw.url, timeout=60, limits=limits)
        for i, gw in targets.items()
    }
    tasks = [asyncio.create_task(_loop(clients[3], 3, load, stop))]  # alone: it takes a lock

    async def holding() -> bool:
        return hold.arrived.is_set()

    await until(holding, "the replica to kill begins a refresh")
    body = json.loads(hold.bodies[0])
    [held] = [
        m
        for m in watch.members.values()
        if m.data["token_file"]["refreshToken"] == body["refreshToken"]
    ]
    others = [i for i in watch.members if i != held.pool_id]
    tasks += [
        asyncio.create_task(_loop(clients[i], i, load, stop)) for i in (0, 1) for _ in range(2)
    ]

    async def others_refreshed() -> bool:
        return all([(await watch.stats(i))["refreshes"] == 1 for i in others])

    await until(others_refreshed, "the survivors refresh the other two accounts")
    tasks += [asyncio.create_task(_loop(clients[3], 3, load, stop)) for _ in range(3)]

    async def loaded() -> bool:  # answers of the replica to kill older than a flush interval
        old = time.monotonic() - FLUSH_INTERVAL_S - SLACK_S
        done = [c for c in load.calls[3] if c.outcome is not None and c.ended < old]
        return len(done) >= 10 and load.answered(0) + load.answered(1) >= 30

    await until(loaded, "answers from every replica")
    assert (await watch.stats(held.pool_id))["refreshes"] == 0  # its lock keeps the others off
    load.lock_ttl_ms = int(await watch.redis.pttl(watch.lock_key(held.pool_id)))
    served = (await watch.stats(held.pool_id))["served"]
    load.killed_at = time.monotonic()
    await asyncio.to_thread(killed.kill)

    async def lapsed() -> bool:
        return not await watch.redis.exists(watch.lock_key(held.pool_id))

    load.lapsed_after_s = await until(lapsed, "the dead replica's lock lapses") - load.killed_at

    async def served_again() -> bool:
        return (await watch.stats(held.pool_id))["served"] >= served + 3

    await until(served_again, "a survivor refreshes the account and serves from it")
    stop.set()
    await asyncio.gather(*tasks)
    for client in clients.values():
        await client.aclose()
    return held.pool_id


def _version(c: Cluster) -> int:
    async def get(store: RedisStore) -> int:
        return int(await store._r.get(store._k("version")) or 0)  # the counter behind changed()

    return on_redis(c.store, get)


def _usage_by_key(c: Cluster, since: float, ids: list[str]) -> dict[str, int]:
    async def rows(store: RedisStore) -> dict[str, int]:
        found: dict[str, int] = {}
        for row in await store.usage_since(since):
            if row.account_id in ids:
                found[row.client_key] = found.get(row.client_key, 0) + 1
        return found

    return on_redis(c.store, rows)


def _check_records(c: Cluster, members: list[PoolMember], version_before: int) -> None:
    """Every account's tokens load and parse, are the emulator's current ones (the newest),
    saved twice (added, then refreshed once); the version counter only went up."""
    ids = [m.pool_id for m in members]

    async def read(store: RedisStore) -> tuple[list[StoredTokens | None], list[str]]:
        await store.health()  # every health record decodes
        return [await store.load_tokens(i) for i in ids], [
            a.id for a in await store.list_accounts()
        ]

    tokens, listed = on_redis(c.store, read)
    current = httpx.get(f"{c.emulator_url}/_emulator/accounts").json()["accounts"]
    live = {a["id"]: a["token_file"] for a in current}
    for m, saved in zip(members, tokens, strict=True):
        assert saved is not None, m.pool_id
        expires = parse_expires_at(saved.data["expiresAt"])
        assert expires is not None and expires[0].timestamp() > time.time(), saved.data
        newest = live[m.emu_id]
        got = (saved.data["accessToken"], saved.data["refreshToken"])
        assert got == (newest["accessToken"], newest["refreshToken"]), m.pool_id
        assert saved.version == 2, (m.pool_id, saved.version)
    assert set(ids) <= set(listed)
    assert _version(c) > version_before


@pytest.mark.long(20)
def test_a_replica_killed_mid_refresh_the_others_go_on(
    cluster: Cluster, accounts_of_test: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A fourth process joins the store as the replica to kill; its Kiro auth service is a
    listener that never answers (HoldAuth), so a refresh leaves it inside the refresh, holding
    that account's refresh lock. (The emulator answers a refresh at once: a kill between its
    answer and the save would be a race to arrange, and would lose the rotated refresh token,
    which no store can save.) Each replica first serves one request with valid tokens (its
    model catalogue, fetched from every account on a first request, is then known: otherwise
    the replica to kill would take all three locks at once); then every token expires at the
    emulator. The replica to kill gets the first request alone: a 403, a refresh, the lock.
    Survivors (replicas 0 and 1) take load meanwhile and refresh the two other accounts;
    requests they send to the held account wait for the lock. The replica to kill serves too,
    from the tokens the survivors refreshed; then SIGKILL, mid-load:

    - no survivor request fails (those on the held account wait, then go on), and the
      survivors keep answering while the dead replica's lock lasts;
    - the lock's key is gone from Redis within LOCK_TTL_S of the kill, and a survivor then
      refreshes the account (one refresh per account in all, at the emulator);
    - every account's tokens in Redis load and parse, are the emulator's current ones and were
      saved twice (added, refreshed once); the store's version counter only went up;
    - usage rows: exactly one per survivor answer; of the killed replica's answers, all but
      those within its last flush interval (0.2 s, + 0.3 s of slack) before the kill (the loss
      tests/e2e/test_usage_on_stop.py documents for SIGKILL), and none beyond its answers and
      its requests in flight.
    """
    ids = ["kill-a0", "kill-a1", "kill-a2"]
    accounts_of_test += ids
    hold = HoldAuth()
    version_before = _version(cluster)
    home, cwd = cluster.root / "home", cluster.root / "cwd"
    [killed] = start_replicas(home, cwd, [cluster.env("killed", KIRO_AUTH_BASE=hold.url)])
    load = Load({0: [], 1: [], 3: []})
    try:
        members = store_accounts(cluster.emulator_url, cluster.store, cluster.root / "logins", ids)
        serving = [cluster.replicas[0], cluster.replicas[1], killed]
        wait_pools(serving, ids)
        for gw, key in zip(serving, (KEYS[0], KEYS[1], KEYS[3]), strict=True):
            assert _post(gw, key, "the model catalogue, before the tokens expire") == 200
        for m in members:  # every token expires: a 403 for whoever uses one next
            httpx.post(
                f"{cluster.emulator_url}/_emulator/accounts/{m.emu_id}/expire"
            ).raise_for_status()
        since = time.time()

        async def run() -> str:
            watch = Watch(cluster.emulator_url, cluster.store, members)
            try:
                return await _kill_mid_load(cluster, killed, hold, watch, load)
            finally:
                await watch.aclose()

        held = asyncio.run(run())
    finally:
        killed.kill()
        hold.close()

    failed = [c for i in (0, 1) for c in load.calls[i] if c.outcome is None or not c.outcome.ok]
    assert not failed, f"{len(failed)} survivor requests failed: {failed[:3]}\n{cluster.output()}"
    assert 0 < load.lock_ttl_ms <= LOCK_TTL_S * 1000
    assert load.lapsed_after_s <= LOCK_TTL_S + 0.5, load.lapsed_after_s
    lapsed_at = load.killed_at + load.lapsed_after_s
    meanwhile = [c for i in (0, 1) for c in load.calls[i] if load.killed_at < c.ended < lapsed_at]
    assert len(meanwhile) >= 10, "the survivors stood still while the dead replica's lock lasted"
    refreshes = {k: v["refreshes"] for k, v in _stats(cluster, members).items()}
    assert refreshes == dict.fromkeys(ids, 1), refreshes
    _check_records(cluster, members, version_before)

    survivors = {"key-1": load.answered(0), "key-2": load.answered(1)}
    wait_until_rows = time.monotonic() + 10
    while {k: _usage_by_key(cluster, since, ids).get(k, 0) for k in survivors} != survivors:
        assert time.monotonic() < wait_until_rows, (_usage_by_key(cluster, since, ids), survivors)
        time.sleep(0.05)
    rows = _usage_by_key(cluster, since, ids).get("key-4", 0)
    calls = load.calls[3]
    answered = load.answered(3)
    window = FLUSH_INTERVAL_S + SLACK_S
    recent = sum(1 for c in calls if c.outcome is not None and load.killed_at - window <= c.ended)
    in_flight = len(calls) - answered
    with capsys.disabled():
        print(
            f"\nkilled replica: {answered} answered, {rows} rows, {recent} answered in the last "
            f"{window:.1f} s, {in_flight} in flight; survivors {survivors}; lock held {held!r} "
            f"(ttl {load.lock_ttl_ms} ms) lapsed {load.lapsed_after_s:.1f} s after the kill"
        )
    assert answered - recent >= 10  # the lower bound says something
    assert answered - recent <= rows <= answered + in_flight
