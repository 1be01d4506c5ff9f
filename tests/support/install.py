"""Installing Ki2API the way a user does, away from this checkout: a copy of the project's
files (what the wheel and the start scripts need), fresh venvs, and the scrubbed environment
the installed commands run in (a temp HOME; no PYTHONPATH; no KIRO_* / KI2API_* from the
developer's shell)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["REPO", "build_wheel", "copy_project", "installed_env", "run_ok"]

REPO = Path(__file__).resolve().parents[2]
_PROJECT_FILES = ("pyproject.toml", "requirements.lock", "README.md", "start.sh")
_SCRUBBED = {"API_KEY", "HOST", "PORT", "LOG_LEVEL", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}


def copy_project(dest: Path) -> Path:
    """The project's files a user downloads (no .venv, no tests, no caches) copied to `dest`."""
    dest.mkdir(parents=True)
    for name in _PROJECT_FILES:
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(
        REPO / "src",
        dest / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
    )
    return dest


def run_ok(
    args: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def build_wheel(project: Path, out: Path) -> Path:
    """`pip wheel` of the copied project (no network: setuptools is in this venv already)."""
    run_ok(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            str(project),
            "-w",
            str(out),
        ],
        cwd=project,
    )
    (wheel,) = out.glob("ki2api-*.whl")
    return wheel


def installed_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment an installed `ki2api` runs in: this one, minus what could leak in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KIRO_", "KI2API_")) and k not in _SCRUBBED
    }
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env.update(HOME=str(home), KI2API_ENV_FILE=str(home / "no-such.env"), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env
