"""SQLiteStore shared by real processes: no lost compare-and-set updates, locks that exclude,
and a store that stays intact and consistent when its writer is killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ki2api.state.sqlite import SQLiteStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes and signals")

PROCESSES = 4

# Each script runs as `python -c SCRIPT DB_PATH ...` and uses only the public store API.
CAS_COUNTER = """
import asyncio, os, sys
from pathlib import Path
from ki2api.state.sqlite import SQLiteStore

async def main(path: str, times: int) -> None:
    store = SQLiteStore.open(Path(path))
    print("ready", flush=True)
    while not os.path.exists(path + ".go"):  # start together, so that they really contend
        await asyncio.sleep(0.001)
    done = conflicts = 0
    while done < times:
        tokens = await store.load_tokens("counter")
        await asyncio.sleep(0.0002)  # widen the read-modify-write window
        if tokens is None:
            saved = await store.save_tokens("counter", {"n": 1}, expected_version=None)
        else:
            n = tokens.data["n"] + 1
            saved = await store.save_tokens("counter", {"n": n}, expected_version=tokens.version)
        if saved is None:
            conflicts += 1
        else:
            done += 1
    await store.aclose()
    print(conflicts)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""

LOCKED_APPEND = """
import asyncio, os, sys
from pathlib import Path
from ki2api.state.sqlite import SQLiteStore

async def main(path: str, shared: str, owner: str, times: int) -> None:
    store = SQLiteStore.open(Path(path))
    print("ready", flush=True)
    while not os.path.exists(path + ".go"):
        await asyncio.sleep(0.001)
    for i in range(times):
        while not await store.try_lock("critical", owner, 60.0):
            await asyncio.sleep(0.001)
        with open(shared, "a") as f:
            f.write(f"enter {owner} {i}\\n")
            f.flush()
        await asyncio.sleep(0.001)  # stay inside for a moment so others could collide
        with open(shared, "a") as f:
            f.write(f"leave {owner} {i}\\n")
        await store.unlock("critical", owner)
    await store.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""

# Continues from whatever is stored: saves n (version n + 1), then records the usage row of n.
KILLED_WRITER = """
import asyncio, sys
from pathlib import Path
from ki2api.state.base import UsageRow
from ki2api.state.sqlite import SQLiteStore

async def main(path: str) -> None:
    store = SQLiteStore.open(Path(path))
    ready = False
    while True:
        tokens = await store.load_tokens("acct")
        n = 0 if tokens is None else tokens.data["n"] + 1
        data = {"n": n, "check": f"v{n}", "pad": f"{n:08d}" * (200 + n % 700)}
        expected = None if tokens is None else tokens.version
        if await store.save_tokens("acct", data, expected_version=expected) is None:
            raise SystemExit("nobody else writes: a conflict is a bug")
        row = UsageRow(at=float(n), client_key=f"n{n}", account_id="acct", model=None,
                       input_tokens=n, output_tokens=None, latency_ms=0.0, outcome="ok")
        await store.record_usage([row])
        if not ready:
            ready = True
            print("ready", flush=True)

asyncio.run(main(sys.argv[1]))
"""


def run_script(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=100)
    assert proc.returncode == 0, err
    return out.removeprefix("ready\n")


def start_together(procs: list[subprocess.Popen[str]], path: Path) -> None:
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    Path(f"{path}.go").touch()


def new_store(path: Path) -> None:
    """Create the file and its schema before the children race to open it."""
    SQLiteStore.open(path).close()


def test_cas_increments_from_several_processes_are_never_lost(tmp_path: Path) -> None:
    path = tmp_path / "ki2api.db"
    new_store(path)
    procs = [run_script(CAS_COUNTER, str(path), "200") for _ in range(PROCESSES)]
    start_together(procs, path)
    for proc in procs:
        finish(proc)  # prints its conflict count (not asserted: scheduling decides it)

    store = SQLiteStore.open(path)
    try:
        tokens = asyncio.run(store.load_tokens("counter"))
        assert tokens is not None
        assert (tokens.data["n"], tokens.version) == (200 * PROCESSES, 200 * PROCESSES)
        assert store.integrity_ok()
    finally:
        store.close()


def test_lock_excludes_other_processes(tmp_path: Path) -> None:
    path, shared = tmp_path / "ki2api.db", tmp_path / "shared.log"
    new_store(path)
    times = 40
    procs = [
        run_script(LOCKED_APPEND, str(path), str(shared), f"w{k}", str(times))
        for k in range(PROCESSES)
    ]
    start_together(procs, path)
    for proc in procs:
        finish(proc)

    lines = shared.read_text().splitlines()
    assert len(lines) == 2 * times * PROCESSES
    for enter, leave in zip(lines[::2], lines[1::2], strict=True):
        assert enter.split()[0] == "enter", lines
        assert leave.split()[1:] == enter.split()[1:] and leave.split()[0] == "leave", lines


def check_after_kill(path: Path, kills: int) -> int:
    """Reopen the store after a kill; return the last saved n after checking its invariants."""
    store = SQLiteStore.open(path)
    try:
        assert store.integrity_ok()
        tokens = asyncio.run(store.load_tokens("acct"))
        assert tokens is not None
        n = tokens.data["n"]
        assert tokens.data["check"] == f"v{n}"
        assert tokens.data["pad"] == f"{n:08d}" * (200 + n % 700)
        assert tokens.version == n + 1
        # every kill may fall between saving n and recording its row: at most one row lost each
        count = asyncio.run(store.usage_count())
        assert n + 1 - kills <= count <= n + 1
        seen = [r.input_tokens or 0 for r in asyncio.run(store.usage_rows(limit=count))]
        assert seen == sorted(set(seen)) and seen[-1] in (n - 1, n)  # no row twice, none torn
        return int(n)
    finally:
        store.close()


def test_sigkill_mid_write_leaves_a_consistent_store(tmp_path: Path) -> None:
    path = tmp_path / "ki2api.db"
    new_store(path)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    last = -1
    for round_ in range(8):
        proc = run_script(KILLED_WRITER, str(path))
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == "ready\n", (round_, proc.stderr.read() if proc.stderr else "")
        time.sleep(rng.uniform(0.02, 0.2))  # let it write for a random while
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=100)
        assert proc.returncode == -signal.SIGKILL, f"seed {seed}"
        n = check_after_kill(path, round_ + 1)
        assert n > last, f"seed {seed}: the writer made progress every round"
        last = n
