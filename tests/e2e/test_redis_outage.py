"""A Redis outage under load (issue 16): a gateway on KI2API_STORE=redis://… with two accounts
serves 20 clients (openai SDK; half with API_KEY, half with a client key kept in Redis) while
its redis-server is killed for 10 seconds and started again on the same port with its data
(append-only file). Meanwhile the emulator expires one account's token, so the gateway refreshes
it while Redis is away (the account rotates its refresh token: losing it would lock the account
out). Requests in flight are counted in Redis (slot leases, as with `--workers 2`), locally
during the outage. Clients see no error (a client key the gateway never saw gets a 503 to retry
during the outage, and is served after); /health says `store.ok: false` during the outage and
true after;
`ki2api_store_errors` moved; afterwards Redis holds the tokens the gateway refreshed (a newer
version), no slot lease is left, and the usage rows equal the requests answered.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ki2api.kiro.accounts.registry import add_account
from ki2api.state.base import AccountRecord, ClientKeyRecord
from ki2api.state.client_key_rules import hash_key, key_hint, new_key
from ki2api.state.redis_store import RedisStore
from tests.conftest import API_KEY, make_account
from tests.support.polling import eventually
from tests.support.redis_proc import RedisProc, own_redis
from tests.support.stores import on_redis


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[RedisProc]:
    """A redis-server of this test's own, to stop and start (its data on disk)."""
    with own_redis(tmp_path / "redis-own") as server:
        yield server


T = TypeVar("T")
MODEL = "claude-sonnet-4.5"
TOKEN = "metrics-token-outage"
CLIENTS = 20
OUTAGE_S = 10.0


def store_errors(url: str) -> float:
    r = httpx.get(f"{url}/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    return sum(
        s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
        if s.name == "ki2api_store_errors_total"
    )


class Load:
    """`CLIENTS` threads asking one short question after another until `stop`."""

    def __init__(self, clients: list[openai.OpenAI]) -> None:
        self.clients = clients
        self.stop = threading.Event()
        self.answered = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(c,)) for c in clients]

    def _run(self, client: openai.OpenAI) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                answer = client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": f"n{n}"}], max_tokens=20
                )
                ok = answer.choices[0].message.content == f"Echo: n{n}"
            except openai.APIError as exc:
                with self._lock:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with self._lock:
                self.answered += 1
                if not ok:
                    self.errors.append(f"wrong answer to n{n}")
            self.stop.wait(0.2)  # a steady, light load (CPU is shared with the suite)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(timeout=60)


class HealthWatch:
    """Polls /health (with the API key, which shows the `store` part): the `store.ok` values
    seen, in order (repeats folded)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[bool] = []
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self.stop.is_set():
                r = http.get(f"{self.url}/health", headers={"authorization": f"Bearer {API_KEY}"})
                assert r.status_code == 200, r.text
                body = r.json()
                ok = bool(body["store"]["ok"])
                assert body["store"]["kind"] == "redis"
                assert body["status"] == "ok"  # the gateway serves: a balancer keeps it
                if not self.seen or self.seen[-1] != ok:
                    self.seen.append(ok)
                self.stop.wait(0.1)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(timeout=30)


def emulator_account(emulator_url: str, account_id: str) -> dict[str, Any]:
    listed = httpx.get(f"{emulator_url}/_emulator/accounts").json()["accounts"]
    found: dict[str, Any] = next(a for a in listed if a["id"] == account_id)
    return found


def refreshes(emulator_url: str, account_id: str) -> int:
    stats = httpx.get(f"{emulator_url}/_emulator/stats").json()["accounts"]
    return int(stats.get(account_id, {}).get("refreshes", 0))


@pytest.mark.long(20)
def test_a_redis_outage_under_load_fails_no_request_and_loses_no_token(
    emulator_url: str, tmp_path: Path, gateway_factory: Any, redis_proc: RedisProc
) -> None:
    url = f"{redis_proc.url}?prefix=outage{uuid.uuid4().hex[:8]}:"
    first = make_account(emulator_url, tmp_path / "a")
    second = make_account(emulator_url, tmp_path / "b", rotate_refresh_token=True)

    async def add_both(store: RedisStore) -> list[AccountRecord]:
        pairs = ((first, "steady"), (second, "refreshed in the outage"))
        return [
            await add_account(store, json.loads(a.token_file.read_text()), label=label)
            for a, label in pairs
        ]

    ids = on_redis(url, add_both)
    key, late = new_key(), new_key()  # `late` is first presented during the outage
    made = ClientKeyRecord("ck-outage", "outage-bot", hash_key(key), key_hint(key))
    assert on_redis(url, lambda s: s.create_client_key(made))
    made = ClientKeyRecord("ck-late", "late-bot", hash_key(late), key_hint(late))
    assert on_redis(url, lambda s: s.create_client_key(made))
    ask: Any = {"model": MODEL, "messages": [{"role": "user", "content": "late"}]}
    refreshed = ids[1].id
    before = on_redis(url, lambda s: s.load_tokens(refreshed))
    assert before is not None

    gw = gateway_factory(
        first,
        store=url,
        kiro_creds_file=None,
        metrics_token=TOKEN,
        workers=2,  # requests in flight counted in Redis (slot leases), as with `--workers 2`
        account_max_inflight=CLIENTS // 2 + 2,
    )
    clients = [gw.openai(api_key=key) if i % 2 else gw.openai() for i in range(CLIENTS)]
    errors_before = store_errors(gw.url)
    with HealthWatch(gw.url) as health, Load(clients) as load:
        eventually(lambda: load.answered >= 3 * CLIENTS)  # every client is answered already
        redis_proc.stop()
        down_at = time.monotonic()
        eventually(lambda: health.seen[-1:] == [False])
        httpx.post(f"{emulator_url}/_emulator/accounts/{second.id}/expire").raise_for_status()
        eventually(lambda: refreshes(emulator_url, second.id) == 1)  # refreshed while away
        answered_away = load.answered
        with pytest.raises(openai.APIStatusError) as unknown:  # a key this gateway never saw
            gw.openai(api_key=late).chat.completions.create(**ask)
        assert unknown.value.status_code == 503 and "try again" in unknown.value.message
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        assert load.answered > answered_away  # still serving, with the refreshed token
        redis_proc.start()
        eventually(lambda: health.seen[-1:] == [True])
        back = load.answered
        assert gw.openai(api_key=late).chat.completions.create(**ask).choices  # known now
        eventually(lambda: load.answered >= back + 2 * CLIENTS)  # serving with Redis again
    assert load.errors == []
    assert health.seen == [True, False, True]
    assert store_errors(gw.url) > errors_before
    assert refreshes(emulator_url, second.id) == 1
    assert refreshes(emulator_url, first.id) == 0

    # Redis holds what the gateway refreshed during the outage: the emulator's current tokens
    after = on_redis(url, lambda s: s.load_tokens(refreshed))
    assert after is not None and after.version == before.version + 1
    current = emulator_account(emulator_url, second.id)["token_file"]
    assert after.data["accessToken"] == current["accessToken"] != before.data["accessToken"]
    assert after.data["refreshToken"] == current["refreshToken"] != before.data["refreshToken"]

    # no slot lease is left behind: the ones freed during the outage were freed when it ended
    eventually(lambda: on_redis(url, lambda s: s.slots_in_use(time.time())) == {})

    # one usage row per request (the load's, and the late key's two), once the log has flushed
    eventually(lambda: on_redis(url, lambda s: s.usage_count()) == load.answered + 2)
