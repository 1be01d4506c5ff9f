"""Installed without a checkout (`pipx install` / `uv tool install` of the wheel, which is a
venv of its own with the wheel in it): the wheel is built from a copy of the project, installed
with the locked versions into a fresh venv, and run from an empty directory. Its `ki2api demo`
must answer the curl line it prints, with the emulator that came inside the wheel."""

from __future__ import annotations

import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.e2e.test_cli import Running, _banner_curl, _run_curl, _stop
from tests.support.install import REPO, build_wheel, copy_project, installed_env, run_ok
from tests.support.servers import free_port


def _fresh_venv(where: Path, wheel: Path) -> Path:
    run_ok([sys.executable, "-m", "venv", str(where)])
    python = where / "bin" / "python"
    run_ok(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-c",
            str(REPO / "requirements.lock"),
            str(wheel),
        ],
        timeout=240,
    )
    return where / "bin"


@pytest.mark.long(30)
def test_the_wheel_installed_in_a_fresh_venv_runs_the_demo(tmp_path: Path) -> None:
    started = time.monotonic()
    wheel = build_wheel(copy_project(tmp_path / "project"), tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    sources = {p.relative_to(REPO / "src").as_posix() for p in (REPO / "src").rglob("*.py")}
    assert sources <= set(names), sorted(sources - set(names))[:5]  # emulator included
    assert "ki2api/py.typed" in names
    assert not [n for n in names if n.startswith("tests/")]

    bin_dir = _fresh_venv(tmp_path / "venv", wheel)
    home, cwd = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    cwd.mkdir()
    env = installed_env(home)
    ki2api = str(bin_dir / "ki2api")
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert run_ok([ki2api, "--version"], cwd=cwd, env=env).strip() == f"ki2api {version}"
    helptext = run_ok([ki2api, "--help"], cwd=cwd, env=env)
    for command in ("serve", "demo", "start", "portable", "doctor", "accounts"):
        assert command in helptext
    where = run_ok(
        [str(bin_dir / "python"), "-c", "import ki2api, kiro_emulator as e; print(e.__file__)"],
        cwd=cwd,
        env=env,
    )
    assert Path(where.strip()).is_relative_to(tmp_path / "venv"), where  # not the checkout

    port = free_port()
    out, err = tmp_path / "demo.out", tmp_path / "demo.err"
    with out.open("wb") as fout, err.open("wb") as ferr:
        proc = subprocess.Popen(
            [ki2api, "demo", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=fout,
            stderr=ferr,
            start_new_session=True,
        )
    try:
        running = Running(proc, out, err)
        curl = running.wait_for("the demo banner", lambda: _banner_curl(running))
        answer = _run_curl(curl)
        assert '"chat.completion.chunk"' in answer, answer
        assert answer.rstrip().endswith("data: [DONE]"), answer
    finally:
        _stop(proc)
    assert time.monotonic() - started < 90
