"""Is the Kiro IDE running? (`ki2api portable` refuses to move its folders under it.)

The process names come from /proc on Linux, `ps` on macOS and `tasklist` on Windows; which of
them are the IDE is a pure function of the names.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["ide_processes", "kiro_ide_running", "process_names"]

# The IDE's executable (Linux `kiro`, macOS `Kiro` and its `Kiro Helper …` processes, Windows
# `Kiro.exe`); not `kiro-cli`, which keeps its login elsewhere.
_IDE_NAMES = frozenset({"kiro", "kiro.exe"})


def ide_processes(names: Iterable[str], ide_names: Iterable[str] = ()) -> list[str]:
    """The names (as given) that are the Kiro IDE's processes: those named in `ide_names`
    (any case, without their folder), or by default the IDE's own names."""
    wanted = {n.lower() for n in ide_names}
    found = []
    for name in names:
        base = name.strip().replace("\\", "/").rsplit("/", 1)[-1].lower()
        if _is_ide(base, wanted):
            found.append(name.strip())
    return found


def _is_ide(base: str, wanted: set[str]) -> bool:
    if wanted:
        return base in wanted
    return base in _IDE_NAMES or base.startswith("kiro helper")


def _linux_names(proc: Path) -> list[str]:
    names = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            names.append((entry / "comm").read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return names


def _command_lines(args: list[str]) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=20, check=False)
    return done.stdout if done.returncode == 0 else ""


def process_names() -> list[str] | None:
    """The running processes' names, or None when they cannot be listed here."""
    try:
        if sys.platform == "win32":
            table = _command_lines(["tasklist", "/FO", "CSV", "/NH"])
            return [row[0] for row in csv.reader(io.StringIO(table)) if row]
        if Path("/proc/self/comm").exists():
            return _linux_names(Path("/proc"))
        return _command_lines(["ps", "-axo", "comm="]).splitlines()  # macOS and other BSDs
    except (OSError, subprocess.SubprocessError):
        return None


def kiro_ide_running(ide_names: Iterable[str] = ()) -> list[str] | None:
    """The IDE's running processes ([] when none), or None when the processes are unknown."""
    names = process_names()
    return None if names is None else ide_processes(names, ide_names)
