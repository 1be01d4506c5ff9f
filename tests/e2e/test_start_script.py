"""`./start.sh` end to end, in a copy of the project (its own .venv: the developer's is never
touched) with a fake home: with no login it makes the venv, installs from the lock and runs
the demo, whose curl line answers; with a login it serves it, without installing again."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import make_account
from tests.e2e.test_cli import MODEL, Running, _banner_curl, _run_curl, _stop, emulator_env, get_ok
from tests.support.install import copy_project, installed_env
from tests.support.servers import free_port


def _start(project: Path, log: Path, env: dict[str, str], *args: str) -> Running:
    out, err = log.with_suffix(".out"), log.with_suffix(".err")
    with out.open("wb") as fout, err.open("wb") as ferr:
        proc = subprocess.Popen(
            ["sh", str(project / "start.sh"), *args],
            cwd=log.parent,  # anywhere: the script works in its own folder
            env=env,
            stdout=fout,
            stderr=ferr,
            start_new_session=True,
        )
    return Running(proc, out, err)


def _wait(running: Running, what: str, probe: Callable[[], Any], *, seconds: float) -> Any:
    """Poll `probe` until it returns something truthy; fail on exit or timeout (the first run
    installs the dependencies before it starts: longer than test_cli's deadline)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if running.proc.poll() is not None:
            pytest.fail(f"exited ({running.proc.returncode}) before {what}:\n{running.output()}")
        result = probe()
        if result:
            return result
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}:\n{running.output()}")


@pytest.mark.long(40)
def test_start_sh_runs_the_demo_without_a_login_then_serves_the_login(
    tmp_path: Path, emulator_url: str
) -> None:
    assert shutil.which("sh") is not None
    project = copy_project(tmp_path / "ki2api")
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()

    first = _start(project, tmp_path / "first", installed_env(home, PORT=str(port)))
    try:
        curl = _wait(first, "the demo banner", lambda: _banner_curl(first), seconds=150)
        answer = _run_curl(curl)
        assert answer.rstrip().endswith("data: [DONE]"), answer
    finally:
        _stop(first.proc)
    said = first.err.read_text()
    assert "installing Ki2API" in said
    assert "no Kiro login found" in said and "starting the demo instead" in said
    assert (project / ".venv" / "bin" / "ki2api").exists()
    assert (project / "data" / "demo").is_dir()  # the script works in its own folder

    account = make_account(emulator_url, home)  # the IDE's login appears in the home
    env = installed_env(home, PORT=str(port), API_KEY="start-key") | {
        k: v for k, v in emulator_env(emulator_url, account).items() if k != "KIRO_CREDS_FILE"
    }
    second = _start(project, tmp_path / "second", env)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(second, "/health", lambda: get_ok(f"{base}/health"), seconds=30)
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="start-key", max_retries=0)
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "started"}]
        )
        assert reply.choices[0].message.content == "Echo: started"
    finally:
        _stop(second.proc)
    assert "installing" not in second.err.read_text()  # the venv was up to date
    assert "demo" not in second.out.read_text()
