"""Process-level helpers: the real `ki2api` script as a subprocess, emulator pools, /proc views.

`Gateway` runs `ki2api serve ...` (or any subcommand) with a scrubbed environment (a temp HOME,
no `.env`, no `KIRO_*` / `KI2API_*` from the developer's shell) in its own process group, so it
can be stopped, or killed with SIGKILL, as a whole (the uvicorn master and its workers).
`tcp_entries` / `socket_owners` read Linux's /proc to tell which process holds which TCP
connection: the proof that several workers took traffic, and the leak checks of the soak.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from kiro_emulator.credentials import write_credentials
from tests.support.servers import free_port

__all__ = [
    "SCRIPT",
    "GatewayProc",
    "PoolMember",
    "TcpEntry",
    "children",
    "clean_env",
    "emulator_stats",
    "make_pool",
    "pool_env",
    "run_cli",
    "socket_owners",
    "tcp_entries",
]

SCRIPT = Path(sys.executable).with_name("ki2api")
START_DEADLINE_S = 40.0
_SCRUBBED = {"API_KEY", "HOST", "PORT", "LOG_LEVEL", "PYTHONUNBUFFERED"}
_ESTABLISHED = "01"


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KIRO_", "KI2API_")) and k not in _SCRUBBED
    }
    env.update(HOME=str(home), KI2API_ENV_FILE=str(home / "no-such.env"))
    env.update(extra)
    return env


def pool_env(emulator_url: str, creds: Path, data: Path, key: str, **extra: str) -> dict[str, str]:
    """The settings of a `ki2api serve` subprocess whose accounts are the token files in
    `creds`, its store in `data`, Kiro the emulator, and `key` its client key."""
    return {
        "KIRO_CREDS_DIR": str(creds),
        "KI2API_DATA_DIR": str(data),
        "KIRO_API_BASE": emulator_url,
        "KIRO_AUTH_BASE": emulator_url,
        "KIRO_OIDC_BASE": emulator_url,
        "API_KEY": key,
        "LOG_LEVEL": "warning",
        **extra,
    }


def run_cli(
    home: Path, cwd: Path, args: Sequence[str], env: dict[str, str], *, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=cwd,
        env=clean_env(home, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class GatewayProc:
    """A `ki2api` subprocess in its own process group, logging to files under `logs`."""

    proc: subprocess.Popen[bytes]
    logs: Path
    url: str
    api_key: str = "ki2api-key-2024"  # /health names the worker (pid) only to a client with it

    @classmethod
    def start(cls, home: Path, cwd: Path, port: int, *args: str, **extra: str) -> GatewayProc:
        logs = home.parent / f"logs-{time.monotonic_ns()}"
        logs.mkdir()
        with (logs / "stdout").open("wb") as out, (logs / "stderr").open("wb") as err:
            proc = subprocess.Popen(
                [str(SCRIPT), *args],
                cwd=cwd,
                env=clean_env(home, **extra),
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        key = extra.get("API_KEY", "ki2api-key-2024").split(",")[0].strip()
        return cls(proc, logs, f"http://127.0.0.1:{port}", key)

    @classmethod
    def serve(cls, home: Path, cwd: Path, *, workers: int = 2, **env: str) -> GatewayProc:
        """`ki2api serve --workers N` on a free loopback port, once every worker answers
        /health (stopped again if they do not)."""
        port = free_port()
        args = ("serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers))
        gw = cls.start(home, cwd, port, *args, **env)
        try:
            gw.wait_healthy(workers=workers)
        except BaseException:
            gw.stop()
            raise
        return gw

    def output(self) -> str:
        out = (self.logs / "stdout").read_text(errors="replace")
        return out + "\n--- stderr ---\n" + (self.logs / "stderr").read_text(errors="replace")

    def wait_healthy(self, workers: int = 1) -> None:
        """Until /health answers 200 from `workers` different worker processes (each on a
        new connection, so the kernel spreads them: a worker still starting takes none)."""
        deadline = time.monotonic() + START_DEADLINE_S
        seen: set[int] = set()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited ({self.proc.returncode}):\n{self.output()}")
            pid = self._healthy_pid()
            if pid is not None:
                seen.add(pid)
                if len(seen) >= workers:
                    return
            time.sleep(0.05)
        raise AssertionError(f"no /health within {START_DEADLINE_S} s:\n{self.output()}")

    def _healthy_pid(self) -> int | None:
        try:
            r = httpx.get(f"{self.url}/health", timeout=2, headers={"x-api-key": self.api_key})
        except httpx.TransportError:
            return None
        if r.status_code != 200:
            return None
        pid = r.json().get("pid")  # none: another gateway took the port first (a port race);
        return int(pid) if pid is not None else None  # the exit check then says so

    def workers(self) -> list[int]:
        """The uvicorn worker processes (children of the master), or [] when single-process."""
        return children(self.proc.pid)

    def kill(self) -> None:
        """SIGKILL the whole process group (master and workers) at once."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        _wait_group_gone(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        _wait_group_gone(self.proc.pid)


def _wait_group_gone(pgid: int) -> None:
    """Workers of a killed master may outlive it by a moment; wait until none is left."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.killpg(pgid, signal.SIGKILL)


def children(pid: int) -> list[int]:
    found: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    for task in task_dir.glob("*") if task_dir.is_dir() else []:
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return sorted(set(found))


# --- emulator pools -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolMember:
    pool_id: str  # the gateway's name (the folder under KIRO_CREDS_DIR, or the `--id` given)
    emu_id: str  # the emulator's name for the same login
    token_file: Path
    data: dict[str, Any]


def make_pool(
    emulator_url: str,
    folder: Path,
    ids: Sequence[str],
    behaviour: dict[str, Any] | None = None,
    *,
    expired: bool = False,
) -> list[PoolMember]:
    """One new emulator account per id, its token file at `folder/<id>/kiro-auth-token.json`.
    `expired`: the access tokens in the files have already expired when this returns (the
    refreshed ones last an hour, unless `behaviour` sets token_ttl_s)."""
    members: list[PoolMember] = []
    for pool_id in ids:
        r = httpx.post(
            f"{emulator_url}/_emulator/accounts",
            json={"count": 1, "auth_method": "social", "behaviour": dict(behaviour or {})},
        )
        r.raise_for_status()
        data = r.json()["accounts"][0]
        if expired:  # expired at the emulator now (`POST .../expire`), and so in the file
            r = httpx.post(f"{emulator_url}/_emulator/accounts/{data['id']}/expire")
            r.raise_for_status()
            data = r.json()
        [path] = write_credentials(folder, [{**data, "id": pool_id}])
        members.append(PoolMember(pool_id, data["id"], path, data))
    return members


def emulator_stats(emulator_url: str, members: Sequence[PoolMember]) -> dict[str, dict[str, int]]:
    """The emulator's counters of each member, by pool id."""
    stats = httpx.get(f"{emulator_url}/_emulator/stats", timeout=10).json()["accounts"]
    return {m.pool_id: stats[m.emu_id] for m in members}


# --- /proc ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TcpEntry:
    local_port: int
    remote_port: int
    state: str  # "01" ESTABLISHED, "0A" LISTEN, ...
    inode: int

    @property
    def established(self) -> bool:
        return self.state == _ESTABLISHED


def tcp_entries() -> list[TcpEntry]:
    """Every IPv4/IPv6 TCP socket of this network namespace (Linux /proc/net/tcp*)."""
    entries: list[TcpEntry] = []
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            local, remote, state, inode = cols[1], cols[2], cols[3], cols[9]
            entries.append(
                TcpEntry(
                    int(local.rsplit(":", 1)[1], 16),
                    int(remote.rsplit(":", 1)[1], 16),
                    state,
                    int(inode),
                )
            )
    return entries


def _socket_inodes(pid: int) -> Iterator[int]:
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return
    for name in names:
        try:
            target = os.readlink(fd_dir / name)
        except OSError:
            continue
        if target.startswith("socket:["):
            yield int(target[8:-1])


def socket_owners(inodes: set[int], pids: Sequence[int]) -> Counter[int]:
    """How many of `inodes` each of `pids` holds."""
    owned: Counter[int] = Counter()
    for pid in pids:
        owned[pid] = sum(1 for inode in _socket_inodes(pid) if inode in inodes)
    return owned


# --- chat calls in both dialects, judged strictly -------------------------------------------------

MODEL = "claude-sonnet-4-20250514"
_INTERNAL = ("Internal server error", "The server had an error while processing your request.")


@dataclass(frozen=True)
class Outcome:
    status: int
    ok: bool  # a complete answer
    problem: str | None = None  # a broken contract (a 500, a bad error, a false finish)


def chat_request(text: str, *, anthropic: bool, stream: bool, key: str) -> dict[str, Any]:
    """`httpx` keyword arguments for one chat call on either surface."""
    messages = [{"role": "user", "content": text}]
    if anthropic:
        body = {"model": MODEL, "max_tokens": 256, "messages": messages, "stream": stream}
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
        return {"url": "/v1/messages", "json": body, "headers": headers}
    body = {"model": MODEL, "messages": messages, "stream": stream}
    return {
        "url": "/v1/chat/completions",
        "json": body,
        "headers": {"authorization": f"Bearer {key}"},
    }


async def chat(
    client: httpx.AsyncClient, text: str, *, anthropic: bool, stream: bool, key: str
) -> Outcome:
    args = chat_request(text, anthropic=anthropic, stream=stream, key=key)
    async with client.stream("POST", **args) as r:
        body = (await r.aread()).decode("utf-8", errors="replace")
    if r.status_code != 200:
        return Outcome(r.status_code, False, _error_problem(r.status_code, body, anthropic))
    expected = "Echo: " + text
    if not stream:
        return _whole(body, anthropic, expected)
    return _judge_stream(body, anthropic, expected)


def _error_problem(status: int, body: str, anthropic: bool) -> str | None:
    if status >= 500 and status not in (502, 503, 504, 529):  # 529: Anthropic's overloaded
        return f"HTTP {status}: {body[:300]}"
    try:
        data = json.loads(body)
    except ValueError:
        return f"HTTP {status} without a JSON error: {body[:300]}"
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict) or not err.get("message") or not err.get("type"):
        return f"HTTP {status}, not an error body: {body[:300]}"
    if anthropic and data.get("type") != "error":
        return f"HTTP {status}, not Anthropic's error shape: {body[:300]}"
    return None


def _whole(body: str, anthropic: bool, expected: str) -> Outcome:
    try:
        data = json.loads(body)
    except ValueError:
        return Outcome(200, False, f"200 without JSON: {body[:300]}")
    if anthropic:
        texts = [b.get("text", "") for b in data.get("content", []) if b.get("type") == "text"]
        ok = data.get("type") == "message" and bool(data.get("stop_reason"))
    else:
        choice = (data.get("choices") or [{}])[0]
        texts = [(choice.get("message") or {}).get("content") or ""]
        ok = bool(choice.get("finish_reason"))
    if not ok or "".join(texts) != expected:
        return Outcome(200, False, f"200 with an incomplete answer: {body[:300]}")
    return Outcome(200, True)


def _sse_data(body: str) -> list[tuple[str, str]]:
    """(event name or "", data) of every SSE event (comments dropped)."""
    events: list[tuple[str, str]] = []
    for block in body.split("\n\n"):
        name, data = "", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            events.append((name, "\n".join(data)))
    return events


def _streamed_text(events: list[tuple[str, str]], anthropic: bool) -> str:
    out: list[str] = []
    for _, data in events:
        if data == "[DONE]":
            continue
        item = json.loads(data)
        if anthropic:
            delta = item.get("delta") or {}
            out.append(delta.get("text", "") if delta.get("type") == "text_delta" else "")
        else:
            for choice in item.get("choices") or []:
                out.append((choice.get("delta") or {}).get("content") or "")
    return "".join(out)


def _judge_stream(body: str, anthropic: bool, expected: str) -> Outcome:
    events = _sse_data(body)
    if anthropic:
        errors = [i for i, (name, _) in enumerate(events) if name == "error"]
        finished = bool(events) and events[-1][0] == "message_stop"
    else:
        errors = [i for i, (_, d) in enumerate(events) if d.startswith('{"error"')]
        finished = bool(events) and events[-1][1] == "[DONE]"
    if errors:
        first = errors[0]
        if first != len(events) - 1 or len(errors) > 1:
            return Outcome(200, False, f"events after an in-stream error: {body[-400:]}")
        if any(m in events[first][1] for m in _INTERNAL):
            return Outcome(200, False, f"an internal error in the stream: {events[first][1]}")
        return Outcome(200, False)
    if not finished:
        return Outcome(200, False, f"a stream with neither a finish nor an error: {body[-400:]}")
    if _streamed_text(events, anthropic) != expected:
        return Outcome(200, False, f"a finished stream with a cut answer: {body[-400:]}")
    return Outcome(200, True)
