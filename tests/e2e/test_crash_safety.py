"""The gateway SIGKILLed while it keeps refreshing tokens: files and store survive (issue 5).

Four accounts, two token files under `KIRO_CREDS_DIR` and two kept in the store (`ki2api
accounts add`), whose access tokens live one second, so the two workers of `ki2api serve`
refresh all the time (token files rewritten, store rows compare-and-set) while the usage log
writes too. Under continuous load the whole process group is killed with SIGKILL at a random
moment after its first refresh under that load, six times. After each kill every token file
parses with both tokens, no stray file could be taken for an account, the SQLite store passes
`PRAGMA integrity_check` and still holds both tokens of its accounts, and every account
refreshes with `ki2api accounts refresh`; the next start serves requests from every account.

Refresh tokens do not rotate here (`rotate_refresh_token` false): a kill between Kiro's answer
and the write would lose a rotated refresh token, which no write order can prevent.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import pytest

from ki2api.kiro.accounts.importers import scan_token_dir
from ki2api.state.sqlite import SQLiteStore
from tests.support.procs import (
    SCRIPT,
    GatewayProc,
    PoolMember,
    chat,
    clean_env,
    emulator_stats,
    make_pool,
    run_cli,
)

KEY = "crash-key"
ROUNDS = 6
LOAD_CLIENTS = 8
SHORT_LIVED = {"token_ttl_s": 1, "rotate_refresh_token": False}
REFRESH_WAIT_S = 30.0  # for the first refresh under load (tokens live 1 s)


def _env(tmp: Path, emulator_url: str) -> dict[str, str]:
    return {
        "KIRO_CREDS_DIR": str(tmp / "creds"),
        "KI2API_DATA_DIR": str(tmp / "data"),
        "KIRO_API_BASE": emulator_url,
        "KIRO_AUTH_BASE": emulator_url,
        "KIRO_OIDC_BASE": emulator_url,
        "API_KEY": KEY,
        "LOG_LEVEL": "warning",
    }


def _start(tmp: Path, env: dict[str, str]) -> GatewayProc:
    return GatewayProc.serve(tmp / "home", tmp / "cwd", workers=2, **env)


async def _every_account_serves(
    gw: GatewayProc, emulator_url: str, members: list[PoolMember]
) -> None:
    before = emulator_stats(emulator_url, members)
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        for i in range(3 * len(members)):  # sequential: the pool rotates over its accounts
            outcome = await chat(
                client, f"warm {i}", anthropic=i % 2 == 1, stream=i % 3 == 0, key=KEY
            )
            assert outcome.ok, (outcome, gw.output()[-2000:])
    after = emulator_stats(emulator_url, members)
    idle = [k for k in after if after[k]["served"] == before[k]["served"]]
    assert not idle, f"accounts that served nothing after a restart: {idle}"


async def _load_then_kill(
    gw: GatewayProc, delay: float, refreshes: Callable[[], int], since: int
) -> int:
    """Keep LOAD_CLIENTS clients busy and SIGKILL the gateway `delay` s after its first
    refresh under that load (`refreshes()` counts them; `since`: the count before the load),
    so every kill lands while it keeps refreshing, however slow a busy machine makes it.
    Answers received."""
    stop = asyncio.Event()
    answered = 0

    async def client_loop(n: int) -> None:
        nonlocal answered
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
            i = 0
            while not stop.is_set():
                try:
                    await chat(
                        client, f"load {n}.{i}", anthropic=n % 2 == 1, stream=i % 2 == 0, key=KEY
                    )
                    answered += 1
                except httpx.HTTPError:
                    await asyncio.sleep(0.02)  # killed under us: expected
                i += 1

    tasks = [asyncio.create_task(client_loop(n)) for n in range(LOAD_CLIENTS)]
    async with asyncio.timeout(REFRESH_WAIT_S):
        while await asyncio.to_thread(refreshes) <= since:
            await asyncio.sleep(0.05)
    await asyncio.sleep(delay)
    await asyncio.to_thread(gw.kill)
    stop.set()
    await asyncio.gather(*tasks)
    return answered


def _check_files(creds: Path, members: Sequence[PoolMember]) -> None:
    for m in members:
        data = json.loads(m.token_file.read_text())  # a torn write would not parse
        assert isinstance(data.get("accessToken"), str) and data["accessToken"], m.pool_id
        assert isinstance(data.get("refreshToken"), str) and data["refreshToken"], m.pool_id
    found = {name for name, _ in scan_token_dir(creds)}
    assert found == {m.pool_id for m in members}, f"stray token files: {found}"


def _check_store(path: Path, members: Sequence[PoolMember]) -> None:
    store = SQLiteStore.open(path)
    try:
        assert store.integrity_ok()

        async def tokens() -> None:
            ids = {r.id for r in await store.list_accounts()}
            assert {m.pool_id for m in members} <= ids
            for m in members:
                stored = await store.load_tokens(m.pool_id)
                assert stored is not None, m.pool_id
                assert stored.data.get("accessToken") and stored.data.get("refreshToken")

        asyncio.run(tokens())
    finally:
        store.close()


def _refresh_all(tmp: Path, env: dict[str, str], ids: Sequence[str]) -> None:
    """`ki2api accounts refresh ID` for every account, side by side."""
    procs = {
        i: subprocess.Popen(
            [str(SCRIPT), "accounts", "refresh", i],
            cwd=tmp / "cwd",
            env=clean_env(tmp / "home", **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in ids
    }
    for account_id, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"accounts refresh {account_id}: {out}{err}"


@pytest.mark.long(65)
@pytest.mark.timeout(600)  # a hang guard: six rounds of slow starts on a busy machine
def test_sigkill_while_refreshing_leaves_files_and_store_intact(
    tmp_path: Path, emulator_url: str
) -> None:
    for d in ("home", "cwd", "creds", "imports"):
        (tmp_path / d).mkdir()
    env = _env(tmp_path, emulator_url)
    files = make_pool(emulator_url, tmp_path / "creds", ["f0", "f1"], SHORT_LIVED)
    stored = make_pool(emulator_url, tmp_path / "imports", ["s0", "s1"], SHORT_LIVED)
    for m in stored:
        args = ("accounts", "add", str(m.token_file), "--id", m.pool_id)
        added = run_cli(tmp_path / "home", tmp_path / "cwd", args, env)
        assert added.returncode == 0, added.stderr
    everyone = files + stored
    rng = random.Random(20240605)
    for round_no in range(ROUNDS):
        gw = _start(tmp_path, env)
        try:
            asyncio.run(_every_account_serves(gw, emulator_url, everyone))
            before = emulator_stats(emulator_url, everyone)

            def refreshes() -> int:
                stats = emulator_stats(emulator_url, everyone)
                return sum(s["refreshes"] for s in stats.values())

            since = sum(s["refreshes"] for s in before.values())
            asyncio.run(_load_then_kill(gw, rng.uniform(0.0, 1.5), refreshes, since))
        finally:
            gw.stop()
        after = emulator_stats(emulator_url, everyone)
        refreshed = sum(after[k]["refreshes"] - before[k]["refreshes"] for k in after)
        assert refreshed > 0, f"round {round_no}: no refresh happened under load"
        _check_files(tmp_path / "creds", files)
        _check_store(tmp_path / "data" / "ki2api.sqlite3", stored)
        _refresh_all(tmp_path, env, [m.pool_id for m in everyone])
    gw = _start(tmp_path, env)
    try:
        asyncio.run(_every_account_serves(gw, emulator_url, everyone))
    finally:
        gw.stop()
