"""The three benchmark processes: emulator, gateway, load generator (all on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.proc import (
    Child,
    children,
    cpu_seconds,
    free_port,
    io_calls,
    rss_kb,
    status_kb,
    system_seconds,
    wait_http,
)

__all__ = ["API_KEY", "LoadDriver", "Stack", "stack_login", "start_gateway", "start_stack"]

HOST = "127.0.0.1"
API_KEY = "ki2api-bench-key"
_PY = sys.executable
_REPO = Path(__file__).resolve().parent.parent
# Variables of the caller's environment that must not leak into the children.
_SCRUB = ("API_KEY", "KIRO_", "KI2API_", "HOST", "PORT", "LOG_LEVEL")


def _child_env(root: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    home = root / "home"
    home.mkdir(exist_ok=True)
    env.update(
        HOME=str(home),
        KI2API_ENV_FILE=str(root / "no.env"),
        KI2API_DATA_DIR=str(root / "data"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def _json(url: str, headers: dict[str, str] | None = None) -> Any:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=5) as resp:  # loopback only
        return json.loads(resp.read())


@dataclass
class Stack:
    """A running emulator and gateway, and what the load generator needs to reach them."""

    emulator: Child
    gateway: Child
    emulator_url: str
    gateway_url: str
    access_token: str
    profile_arn: str
    # The gateway process itself: `gateway.pid` unless the gateway runs under a wrapper (py-spy)
    gateway_pid: int = field(default=0)

    def __post_init__(self) -> None:
        self.gateway_pid = self.gateway_pid or self.gateway.pid

    def targets(self) -> dict[str, dict[str, Any]]:
        em_port = int(self.emulator_url.rsplit(":", 1)[1])
        gw_port = int(self.gateway_url.rsplit(":", 1)[1])
        return {
            "direct": {
                "kind": "direct",
                "host": HOST,
                "port": em_port,
                "secret": self.access_token,
                "profile_arn": self.profile_arn,
            },
            "gateway": {"kind": "gateway", "host": HOST, "port": gw_port, "secret": API_KEY},
        }

    def sample(self) -> dict[str, float]:
        """CPU seconds and RSS (KB) of both servers, now; the gateway's system time and its
        read and write system calls."""
        gw, em = self.gateway_pid, self.emulator.pid
        reads, writes = io_calls(gw)
        return {
            "gateway_cpu_s": cpu_seconds(gw),
            "gateway_sys_s": system_seconds(gw),
            "gateway_reads": reads,
            "gateway_writes": writes,
            "emulator_cpu_s": cpu_seconds(em),
            "gateway_rss_kb": rss_kb(gw),
            "emulator_rss_kb": rss_kb(em),
            "gateway_hwm_kb": status_kb(gw, "VmHWM"),
            "emulator_hwm_kb": status_kb(em, "VmHWM"),
        }

    def emulator_streams_now(self) -> int:
        stats = _json(self.emulator_url + "/_emulator/stats")
        return sum(int(a.get("streams_now", 0)) for a in stats.get("accounts", {}).values())

    def stop(self) -> None:
        for child in (self.gateway, self.emulator):
            child.stop()


def _wait_file(path: Path, child: Child, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file():
            with contextlib.suppress(ValueError):
                return dict(json.loads(path.read_text()))
        if child.poll() is not None:
            raise RuntimeError(f"emulator exited early:\n{child.log_tail()}")
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not appear within {timeout_s}s")


def _start_emulator(
    root: Path, logs: Path, name: str = "emulator"
) -> tuple[Child, str, dict[str, Any]]:
    port = free_port()
    creds = root / "creds"
    argv = [_PY, "-m", "ki2api.cli.main", "emulator", "--host", HOST, "--port", str(port)]
    argv += ["--accounts", "1", "--credentials-dir", str(creds)]
    child = Child(name, argv, log_dir=logs, env=_child_env(root, {}), cwd=_REPO)
    url = f"http://{HOST}:{port}"
    try:
        wait_http(url + "/_emulator/stats", 30, child)
        token = _wait_file(creds / "acct-1" / "kiro-auth-token.json", child, 10)
    except BaseException:
        child.stop()
        raise
    return child, url, token


def start_gateway(
    root: Path,
    logs: Path,
    emulator_url: str,
    login: dict[str, str],
    *,
    name: str = "gateway",
    workers: int = 1,
    wrap: Sequence[str] = (),
) -> tuple[Child, str]:
    """`ki2api serve` on a free port over the emulator; `login` adds the variables that say
    where the accounts are (KIRO_CREDS_FILE or KIRO_CREDS_DIR) and any other settings;
    `workers` > 1: `--workers N`, and it returns once every worker answers;
    `wrap` a command the gateway runs under (py-spy ... --)."""
    port = free_port()
    env = _child_env(
        root,
        {
            "API_KEY": API_KEY,
            "KIRO_API_BASE": emulator_url,
            "KIRO_AUTH_BASE": emulator_url,
            "KIRO_OIDC_BASE": emulator_url,
            "LOG_LEVEL": "warning",
            **login,
        },
    )
    argv = [*wrap, _PY, "-m", "ki2api.cli.main", "serve", "--host", HOST, "--port", str(port)]
    if workers > 1:
        argv += ["--workers", str(workers)]
    child = Child(name, argv, log_dir=logs, env=env, cwd=_REPO)
    url = f"http://{HOST}:{port}"
    try:
        body = json.loads(wait_http(url + "/health", 30, child))
        if body.get("status") != "ok":
            raise RuntimeError(f"gateway health: {body}")
        if workers > 1:
            _wait_workers(url, workers, child, 30)
    except BaseException:
        child.stop()
        raise
    return child, url


def _wait_workers(url: str, workers: int, child: Child, timeout_s: float) -> None:
    """Until /health answered from `workers` different processes (a new connection each, so
    the kernel spreads them over the workers that are up)."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(seen) < workers:
        if time.monotonic() > deadline or child.poll() is not None:
            raise RuntimeError(f"{len(seen)} of {workers} workers up:\n{child.log_tail()}")
        with contextlib.suppress(OSError, ValueError, KeyError):
            seen.add(int(_json(url + "/health", {"x-api-key": API_KEY})["pid"]))
        time.sleep(0.02)


def stack_login(token_file: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The gateway settings of a bench stack: one account, no caps in the way."""
    return {
        "KIRO_CREDS_FILE": str(token_file),
        "KI2API_MAX_UPSTREAM_CONNECTIONS": "4096",
        "KI2API_MAX_CONNECTIONS": "4096",  # the hold section opens 2,000 streams
        # the gateway's own overhead on one account: no per-account cap or wait queue
        "KI2API_ACCOUNT_MAX_INFLIGHT": "0",
        **(extra or {}),
    }


def start_stack(
    root: Path,
    logs: Path,
    extra: dict[str, str] | None = None,
    *,
    name: str = "gateway",
    wrap: Sequence[str] = (),
) -> Stack:
    """Start a fresh emulator (one account) and a gateway pointed at it (`extra`: more of the
    gateway's settings, e.g. KI2API_STORE; `name`: its log file's; `wrap`: a command the
    gateway runs under, e.g. py-spy, whose child is then the gateway measured)."""
    root.mkdir(parents=True, exist_ok=True)
    emulator_name = "emulator" if name == "gateway" else f"{name}-emulator"
    emulator, em_url, token = _start_emulator(root, logs, emulator_name)
    try:
        token_file = root / "creds" / "acct-1" / "kiro-auth-token.json"
        login = stack_login(token_file, extra)
        gateway, gw_url = start_gateway(root, logs, em_url, login, name=name, wrap=wrap)
    except BaseException:
        emulator.stop()
        raise
    gateway_pid = 0
    if wrap:
        served = children(gateway.pid)
        if len(served) != 1:
            gateway.stop()
            emulator.stop()
            raise RuntimeError(f"{wrap[0]} has {len(served)} child processes, not 1")
        gateway_pid = served[0]
    return Stack(
        emulator=emulator,
        gateway=gateway,
        emulator_url=em_url,
        gateway_url=gw_url,
        access_token=str(token["accessToken"]),
        profile_arn=str(token.get("profileArn", "")),
        gateway_pid=gateway_pid,
    )


class LoadDriver:
    """Talks the line protocol of `bench.load` (see its docstring)."""

    def __init__(self, logs: Path) -> None:
        argv = [_PY, "-m", "bench.load"]
        self.child = Child("load", argv, log_dir=logs, cwd=_REPO, pipes=True)
        self._buf = b""

    def send(self, obj: dict[str, Any]) -> None:
        assert self.child.proc.stdin is not None
        self.child.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.child.proc.stdin.flush()

    def expect(self, phase: str, timeout_s: float) -> dict[str, Any]:
        msg = self._read_line(timeout_s)
        if msg.get("phase") != phase:
            raise RuntimeError(f"load generator: expected {phase}, got {msg}")
        return msg

    def _read_line(self, timeout_s: float) -> dict[str, Any]:
        out = self.child.proc.stdout
        assert out is not None
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"load generator silent for {timeout_s}s")
            readable, _, _ = select.select([out], [], [], left)
            if readable:
                chunk = os.read(out.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(f"load generator exited:\n{self.child.log_tail()}")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return dict(json.loads(line))

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.send({"cmd": "exit"})
            self.child.proc.wait(5)
        self.child.stop()
