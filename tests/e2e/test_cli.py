"""The real `ki2api` console script, run as a subprocess with a controlled environment.

Every run gets a temp HOME and a temp working directory, no `KIRO_*` / `KI2API_*` / server
variables from the developer's shell, and `KI2API_ENV_FILE` pointing at a file that does not
exist, so nothing on the machine leaks in. Long-running commands (`serve`, `demo`, `emulator`)
start in their own process group and are always stopped in `finally`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import Account, make_account, make_expired_account
from tests.support.servers import free_port, serve_in_thread

SCRIPT = Path(sys.executable).with_name("ki2api")
DEFAULT_KEY = "ki2api-key-2024"
MODEL = "claude-sonnet-4-20250514"
START_DEADLINE_S = 20.0
TOKEN_PATH = Path(".aws") / "sso" / "cache" / "kiro-auth-token.json"
_SCRUBBED = {"API_KEY", "HOST", "PORT", "LOG_LEVEL", "PYTHONUNBUFFERED"}


@dataclass
class Sandbox:
    home: Path
    cwd: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("KIRO_", "KI2API_")) and k not in _SCRUBBED
        }
        env.update(HOME=str(self.home), KI2API_ENV_FILE=str(self.home / "no-such.env"))
        env.update(extra)
        return env

    def run(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), *args],
            cwd=self.cwd,
            env=self.env(**extra_env),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    return Sandbox(home.resolve(), cwd.resolve())


def emulator_env(emulator_url: str, account: Account) -> dict[str, str]:
    return {
        "KIRO_CREDS_FILE": str(account.token_file),
        "KIRO_API_BASE": emulator_url,
        "KIRO_AUTH_BASE": emulator_url,
        "KIRO_OIDC_BASE": emulator_url,
    }


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def output(self) -> str:
        out = self.out.read_text(errors="replace")
        return out + "\n--- stderr ---\n" + self.err.read_text(errors="replace")

    def wait_for(self, what: str, probe: Callable[[], Any]) -> Any:
        """Poll `probe` until it returns something truthy; fail on exit or timeout."""
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"exited ({self.proc.returncode}) before {what}:\n{self.output()}")
            result = probe()
            if result:
                return result
            time.sleep(0.05)
        pytest.fail(f"timed out waiting for {what}:\n{self.output()}")


@contextmanager
def running(sandbox: Sandbox, *args: str, **extra_env: str) -> Iterator[Running]:
    logs = sandbox.home.parent / f"logs-{time.monotonic_ns()}"
    logs.mkdir()
    out, err = logs / "stdout", logs / "stderr"
    with out.open("wb") as fout, err.open("wb") as ferr:
        proc = subprocess.Popen(
            [str(SCRIPT), *args],
            cwd=sandbox.cwd,
            env=sandbox.env(**extra_env),
            stdout=fout,
            stderr=ferr,
            start_new_session=True,
        )
    try:
        yield Running(proc, out, err)
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def get_ok(url: str, **kwargs: Any) -> httpx.Response | None:
    try:
        r = httpx.get(url, timeout=2, **kwargs)
    except httpx.TransportError:
        return None
    return r if r.status_code == 200 else None


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- serve -------------------------------------------------------------------------------------


def test_serve_without_login_names_every_place_and_does_not_serve(sandbox: Sandbox) -> None:
    port = free_port()
    result = sandbox.run("serve", "--port", str(port))
    assert result.returncode != 0
    err = result.stderr
    for place in (
        "KIRO_ACCESS_TOKEN",
        "KIRO_REFRESH_TOKEN",
        "KIRO_CREDS_FILE",
        str(sandbox.cwd / "data" / TOKEN_PATH),
        str(sandbox.home / TOKEN_PATH),
    ):
        assert place in err, f"{place!r} missing from:\n{err}"
    assert "Kiro IDE" in err and "ki2api demo" in err  # how to log in, and how to try without
    assert "Traceback" not in err
    assert "Uvicorn running" not in result.stdout + err
    assert not listening(port)


def test_serve_with_an_emulator_login_answers_the_openai_sdk(
    sandbox: Sandbox, emulator_url: str
) -> None:
    account = make_account(emulator_url, sandbox.home.parent / "login")
    port, env_port = free_port(), free_port()
    env = emulator_env(emulator_url, account) | {"PORT": str(env_port), "API_KEY": "cli-key"}
    with running(sandbox, "serve", "--host", "127.0.0.1", "--port", str(port), **env) as proc:
        base = f"http://127.0.0.1:{port}"
        health = proc.wait_for("/health", lambda: get_ok(f"{base}/health"))
        assert health.json()["status"] == "ok"
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="cli-key", max_retries=0)
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello from the cli"}]
        )
        assert reply.choices[0].message.content == "Echo: hello from the cli"
        assert not listening(env_port), "the PORT variable won over --port"
        log = httpx.get(f"{emulator_url}/_emulator/requests", params={"limit": 20}).json()
        assert any(q["account"] == account.id for q in log["requests"])


# --- demo --------------------------------------------------------------------------------------


def _banner_curl(proc: Running) -> str | None:
    for line in proc.out.read_text(errors="replace").splitlines():
        if "curl " in line:
            return line[line.index("curl ") :]
    return None


def _run_curl(command: str) -> str:
    args = shlex.split(command)
    assert args[0] == "curl"
    if shutil.which("curl") is not None:
        done = subprocess.run(
            [*args, "-sS", "--max-time", "20"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout
    return _curl_by_httpx(args[1:])


def _curl_by_httpx(args: list[str]) -> str:
    """The same request as the printed curl line, for machines without curl."""
    url, headers, data = args[0], {}, ""
    for flag, value in zip(args[1::2], args[2::2], strict=False):
        if flag == "-H":
            name, _, val = value.partition(":")
            headers[name.strip()] = val.strip()
        elif flag == "-d":
            data = value
    return httpx.post(url, headers=headers, content=data, timeout=20).text


def test_demo_prints_a_working_curl_line(sandbox: Sandbox) -> None:
    port = free_port()
    with running(sandbox, "demo", "--port", str(port)) as proc:
        curl = proc.wait_for("the demo banner", lambda: _banner_curl(proc))
        banner = proc.out.read_text()
        assert f"http://127.0.0.1:{port}/v1" in banner
        assert DEFAULT_KEY in banner
        answer = _run_curl(curl)
        assert "data: [DONE]" in answer, answer
        assert '"chat.completion.chunk"' in answer
        # the console is on with the admin key the banner prints (stdout is no terminal: no
        # browser was opened)
        fields = [line.strip().partition(":") for line in banner.splitlines()]
        lines = {name.strip(): value.strip() for name, _, value in fields}
        assert lines["console"] == f"http://127.0.0.1:{port}/ui/"
        admin_key = lines["admin key"].split()[0]
        login = httpx.post(
            f"http://127.0.0.1:{port}/ui/api/login", json={"admin_key": admin_key}, timeout=10
        )
        assert login.status_code == 200 and login.json()["csrf"]
    assert (sandbox.cwd / "data" / "demo" / "acct-1" / "kiro-auth-token.json").is_file()


def test_demo_on_a_busy_port_says_so_and_exits(sandbox: Sandbox) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = sandbox.run("demo", "--port", str(port))
    assert result.returncode != 0
    assert f"could not listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert "curl" not in result.stdout


# --- emulator ----------------------------------------------------------------------------------


def test_emulator_writes_token_files_and_serves_stats(sandbox: Sandbox) -> None:
    port, creds = free_port(), sandbox.cwd / "creds"
    args = ("emulator", "--port", str(port), "--accounts", "2", "--credentials-dir", str(creds))
    with running(sandbox, *args) as proc:
        base = f"http://127.0.0.1:{port}"
        stats = proc.wait_for("/_emulator/stats", lambda: get_ok(f"{base}/_emulator/stats"))
        assert set(stats.json()["accounts"]) == {"acct-1", "acct-2"}
        for acct in ("acct-1", "acct-2"):
            token = json.loads((creds / acct / "kiro-auth-token.json").read_text())
            auth = {"Authorization": f"Bearer {token['accessToken']}"}
            assert get_ok(f"{base}/ListAvailableModels", headers=auth) is not None, acct


# --- doctor ------------------------------------------------------------------------------------


def _login(kind: str, emulator_url: str, where: Path) -> Account | None:
    if kind == "none":
        return None
    if kind == "valid":
        return make_account(emulator_url, where)
    if kind == "expired":
        return make_expired_account(emulator_url, where)
    return make_expired_account(emulator_url, where, refresh_fails=True)


DOCTOR_CASES = [
    pytest.param("valid", 0, ["still valid", "Kiro answered"], id="valid token"),
    pytest.param(
        "expired", 0, ["refreshed successfully", "Kiro answered"], id="expired token refreshes"
    ),
    pytest.param(
        "refresh fails",
        1,
        ["could not get a usable access token", "in to Kiro again"],
        id="refresh refused",
    ),
    pytest.param("none", 1, ["no Kiro login found", "KIRO_CREDS_FILE"], id="no login"),
]


@pytest.mark.parametrize(("login", "rc", "phrases"), DOCTOR_CASES)
def test_doctor(
    sandbox: Sandbox, emulator_url: str, login: str, rc: int, phrases: list[str]
) -> None:
    account = _login(login, emulator_url, sandbox.home.parent / "login")
    env = emulator_env(emulator_url, account) if account else {}
    result = sandbox.run("doctor", **env)
    text = result.stdout + result.stderr
    assert (result.returncode == 0) == (rc == 0), text
    for phrase in phrases:
        assert phrase in text, text
    assert "Traceback" not in text
    if account is None:
        assert str(sandbox.cwd / "data" / TOKEN_PATH) in text
        assert str(sandbox.home / TOKEN_PATH) in text
        return
    file = account.data["token_file"]
    assert file["accessToken"] not in text and file["refreshToken"] not in text
    if login == "expired":
        rewritten = json.loads(account.token_file.read_text())
        assert rewritten["accessToken"] != file["accessToken"]


def test_doctor_no_upstream_does_not_contact_kiro(sandbox: Sandbox, emulator_url: str) -> None:
    account = make_expired_account(emulator_url, sandbox.home.parent / "login")

    def seen() -> tuple[Any, Any]:
        log = httpx.get(f"{emulator_url}/_emulator/requests", params={"limit": 1000}).json()
        stats = httpx.get(f"{emulator_url}/_emulator/stats").json()["accounts"][account.id]
        return log["requests"], stats

    before = seen()
    result = sandbox.run("doctor", "--no-upstream", **emulator_env(emulator_url, account))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "expired" in result.stdout
    assert seen() == before
    assert json.loads(account.token_file.read_text()) == account.data["token_file"]


@pytest.mark.parametrize(
    ("status", "phrase"), [(200, "did not understand"), (503, "Kiro answered 503")]
)
def test_doctor_reports_an_odd_upstream_answer(sandbox: Sandbox, status: int, phrase: str) -> None:
    async def models(request: Request) -> Response:
        return Response("<html>maintenance</html>", status_code=status, media_type="text/html")

    stub = Starlette(routes=[Route("/ListAvailableModels", models)])
    with serve_in_thread(stub) as url:
        result = sandbox.run("doctor", KIRO_ACCESS_TOKEN="stub-token", KIRO_API_BASE=url)
    text = result.stdout + result.stderr
    assert result.returncode == 1, text
    assert phrase in text and "Traceback" not in text
