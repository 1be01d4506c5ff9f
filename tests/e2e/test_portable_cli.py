"""`ki2api portable` as a user runs it: the real console script, a fake home directory, a
project folder as the working directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_account
from tests.e2e.test_cli import Sandbox

SCRIPT = Path(sys.executable).with_name("ki2api")
CACHE = Path(".aws") / "sso" / "cache"


# A process name of this test run's own stands for the IDE: the test that starts one must not
# stop the others (other xdist workers) from moving folders, nor a developer's real Kiro IDE
# the tests (the IDE's real names are the pure table's, tests/unit/test_portable_plan.py).
FAKE_IDE = f"kt-{uuid.uuid4().hex[:8]}"


def _run(sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    if args and args[0] == "portable":
        args = (*args, "--ide-name", FAKE_IDE)
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=sandbox.cwd,
        env=sandbox.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under `root`, through links (as the IDE and the gateway see them)."""
    found = {}
    for dirpath, _dirs, files in os.walk(root, followlinks=True):
        for name in files:
            path = Path(dirpath) / name
            found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


@pytest.fixture
def logged_in(tmp_path: Path, emulator_url: str) -> Iterator[tuple[Sandbox, dict[str, bytes]]]:
    """A home with the IDE's login (a token file from the emulator) and its ~/.kiro folder."""
    home, cwd = tmp_path / "home", tmp_path / "project"
    cwd.mkdir()
    make_account(emulator_url, home)
    (home / ".kiro" / "steering").mkdir(parents=True)
    (home / ".kiro" / "steering" / "rules.md").write_text("be brief\n")
    (home / ".aws" / "config").write_text("[default]\nregion = us-east-1\n")  # not Kiro's
    yield Sandbox(home.resolve(), cwd.resolve()), _tree(home)


def test_portable_moves_links_back_and_undo_restores(
    logged_in: tuple[Sandbox, dict[str, bytes]],
) -> None:
    sandbox, before = logged_in
    home, data = sandbox.home, sandbox.cwd / "data"

    dry = _run(sandbox, "portable", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would move" in dry.stdout and not data.exists()

    done = _run(sandbox, "portable")
    assert done.returncode == 0, done.stdout + done.stderr
    for rel in (CACHE, Path(".kiro")):
        assert (home / rel).is_symlink() and (home / rel).resolve() == (data / rel).resolve()
    assert not (home / ".aws").is_symlink() and (home / ".aws" / "config").is_file()
    assert _tree(home) == before  # everything readable where the IDE looks
    assert _tree(data) == {k: v for k, v in before.items() if not k.endswith("config")}

    # The gateway finds the login in the project folder (the work directory's data/).
    doctor = _run(sandbox, "doctor", "--no-upstream")
    assert doctor.returncode == 0, doctor.stdout
    assert f"{data / CACHE / 'kiro-auth-token.json'} (the work directory): found" in doctor.stdout

    again = _run(sandbox, "portable")
    assert again.returncode == 0 and "portable already" in again.stdout

    undo = _run(sandbox, "portable", "--undo")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert not (home / CACHE).is_symlink() and not (home / ".kiro").is_symlink()
    assert _tree(home) == before
    assert not (data / CACHE).exists() and not (data / ".kiro").exists()


def test_portable_on_a_new_machine_links_the_folders_that_came_with_the_project(
    logged_in: tuple[Sandbox, dict[str, bytes]], tmp_path: Path
) -> None:
    sandbox, before = logged_in
    assert _run(sandbox, "portable").returncode == 0
    # The project folder is copied to another machine: a new, empty home there.
    elsewhere = Sandbox((tmp_path / "new-home").resolve(), (tmp_path / "copy").resolve())
    elsewhere.home.mkdir()
    shutil.copytree(sandbox.cwd, elsewhere.cwd, symlinks=True)
    moved = _run(elsewhere, "portable")
    assert moved.returncode == 0, moved.stdout
    assert "link " in moved.stdout
    assert _tree(elsewhere.home) == {k: v for k, v in before.items() if not k.endswith("config")}


def test_portable_refuses_when_a_target_exists_and_changes_nothing(
    logged_in: tuple[Sandbox, dict[str, bytes]],
) -> None:
    sandbox, before = logged_in
    theirs = sandbox.cwd / "data" / ".kiro"
    theirs.mkdir(parents=True)
    (theirs / "mine.txt").write_text("keep")
    result = _run(sandbox, "portable")
    assert result.returncode == 1
    assert "refuse" in result.stdout and "nothing was changed" in result.stdout
    assert _tree(sandbox.home) == before and not (sandbox.home / CACHE).is_symlink()
    assert _tree(sandbox.cwd / "data") == {".kiro/mine.txt": b"keep"}


@pytest.mark.skipif(not Path("/proc/self/comm").exists(), reason="needs Linux's /proc")
def test_portable_refuses_while_the_kiro_ide_runs(
    logged_in: tuple[Sandbox, dict[str, bytes]], tmp_path: Path
) -> None:
    sandbox, before = logged_in
    fake_ide = tmp_path / FAKE_IDE  # a process named as the IDE's executable is
    sleep = shutil.which("sleep")
    assert sleep is not None
    shutil.copy(sleep, fake_ide)
    proc = subprocess.Popen([str(fake_ide), "60"])
    try:
        result = _run(sandbox, "portable")
    finally:
        proc.kill()
        proc.wait()
    assert result.returncode == 1, result.stdout
    assert f"the Kiro IDE is running ({FAKE_IDE})" in result.stdout
    assert _tree(sandbox.home) == before and not (sandbox.cwd / "data").exists()
    assert not os.path.islink(sandbox.home / CACHE)


def test_portable_with_dir_uses_that_folder_relative_to_the_working_directory(
    logged_in: tuple[Sandbox, dict[str, bytes]],
) -> None:
    sandbox, before = logged_in
    done = _run(sandbox, "portable", "--dir", "elsewhere/login")
    assert done.returncode == 0, done.stdout
    target = sandbox.cwd / "elsewhere" / "login"
    assert (sandbox.home / ".kiro").resolve() == (target / ".kiro").resolve()
    assert _tree(sandbox.home) == before and not (sandbox.cwd / "data").exists()
    assert _run(sandbox, "portable", "--undo", "--dir", str(target)).returncode == 0
    assert _tree(sandbox.home) == before and not (sandbox.home / ".kiro").is_symlink()
