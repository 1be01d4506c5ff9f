"""Child processes for the benchmark: spawn in their own process group, probe /proc, stop.

CPU time comes from `/proc/<pid>/stat` (utime + stime, in clock ticks), memory from
`/proc/<pid>/status` (VmRSS, VmHWM). No psutil.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "Child",
    "children",
    "cpu_seconds",
    "io_calls",
    "system_seconds",
    "free_port",
    "raise_nofile_limit",
    "rss_kb",
    "status_kb",
    "tree_cpu_seconds",
    "tree_pids",
    "tree_rss_kb",
    "wait_http",
]

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (not its children), in seconds."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _TICKS


def system_seconds(pid: int) -> float:
    """The system (kernel) part of `cpu_seconds`."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return int(raw[raw.rindex(")") + 2 :].split()[12]) / _TICKS


def io_calls(pid: int) -> tuple[int, int]:
    """The read and write system calls the process has made (`syscr`, `syscw` of
    /proc/<pid>/io: sockets included; (0, 0) where the kernel does not say)."""
    try:
        lines = Path(f"/proc/{pid}/io").read_text().splitlines()
    except OSError:
        return 0, 0
    fields = dict(line.split(": ", 1) for line in lines if ": " in line)
    return int(fields.get("syscr", 0)), int(fields.get("syscw", 0))


def status_kb(pid: int, key: str) -> int:
    """One `kB` line of /proc/<pid>/status, e.g. VmRSS or VmHWM."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def rss_kb(pid: int) -> int:
    return status_kb(pid, "VmRSS")


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (from every thread's `children` list)."""
    out: list[int] = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            out += [int(p) for p in path.read_text().split()]
    return out


def tree_pids(pid: int) -> list[int]:
    """`pid` and all its live descendants."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo += children(current)
    return pids


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of `pid` and its live descendants (a worker that exited is not counted)."""
    total = 0.0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(p)
    return total


def tree_rss_kb(pid: int) -> int:
    """VmRSS summed over `pid` and its live descendants (shared pages count once per process)."""
    total = 0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError, KeyError):
            total += rss_kb(p)
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_nofile_limit(want: int = 16384) -> int:
    """Raise the soft open-files limit (children inherit it); return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def wait_http(url: str, timeout_s: float, child: Child | None = None) -> bytes:
    """Poll a loopback URL until it answers 200; return the body."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            raise RuntimeError(f"{child.name} exited early:\n{child.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # loopback only
                return bytes(resp.read())
        except Exception as exc:  # not up yet
            last = exc
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout_s}s ({last!r})")


class Child:
    """A subprocess in its own session (process group); output goes to a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        pipes: bool = False,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else self._log,
            stderr=self._log,
            start_new_session=True,
            bufsize=0 if pipes else -1,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left."""
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(grace_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers in the group
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._log.close()

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)
