"""The container image, built from the Dockerfile and run against the emulator (deploy/README.md).

One test, in steps, so the engine, the base image and the image are made once: a streaming chat
through the running container (the token directory mounted read-only: the refreshed token is kept
in memory and the file is left as it was), the data volume surviving a restart, compose up and
down, and the Hugging Face Space run mode (port 7860, the login and key as env secrets, a
read-only root with a tmpfs /tmp and a /data volume).

Needs root and Debian's `docker.io`, `docker-compose` and `mmdebstrap` (`.ci/run` installs them).
Without an engine it skips, saying why; with KI2API_REQUIRE_CONTAINER=1 (CI) that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from kiro_emulator import EmulatorConfig
from kiro_emulator import create_app as create_emulator_app
from tests.conftest import expire_now, make_expired_account
from tests.support.container import (
    COMPOSE,
    DOCKER,
    NoEngine,
    base_image,
    bridge_gateway,
    cache_lock,
    docker_engine,
    host_port,
    run,
    serve_on,
    wait_healthy,
)

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-container-test"
IMAGE = "ki2api-test:latest"
SPACE_IMAGE = "ki2api-test-space:latest"
UID = 1000  # the image's user (and the one Hugging Face Spaces run as)


def _unavailable(reason: str) -> None:
    if os.environ.get("KI2API_REQUIRE_CONTAINER") == "1":
        pytest.fail(f"container test required (KI2API_REQUIRE_CONTAINER=1) but: {reason}")
    pytest.skip(f"no container engine: {reason}")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[str]:
    """The base image's tag, with an engine running for the test."""
    try:
        with docker_engine(tmp_path) as _:
            try:
                tag = base_image()
            except FileNotFoundError as exc:  # no mmdebstrap and no cached base
                _unavailable(f"cannot build the base image: {exc}")
            yield tag
    except NoEngine as exc:
        _unavailable(str(exc))


def _build(base: str, context: Path, tag: str) -> None:
    run(
        DOCKER,
        "build",
        "-q",
        "--build-arg",
        f"BASE_IMAGE={base}",
        "-t",
        tag,
        str(context),
        timeout=400,
    )


def _token_dir(emulator: str) -> tuple[Path, Path, str]:
    """A token directory as the Kiro IDE leaves it (owned by the image's user, 0600 file), with
    an expired access token so the first request refreshes. -> (cache dir, file, account id)."""
    home = Path(tempfile.mkdtemp(prefix="ki2api-ct-"))
    os.chmod(home, 0o755)
    acct = make_expired_account(emulator, home)
    cache = acct.token_file.parent
    for path in (home / ".aws", home / ".aws" / "sso", cache, acct.token_file):
        os.chown(path, UID, UID)
    return cache, acct.token_file, acct.id


def _kiro_env(emulator: str) -> list[str]:
    env = {"KIRO_API_BASE": emulator, "KIRO_AUTH_BASE": emulator, "KIRO_OIDC_BASE": emulator}
    return [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]


def _stream_chat(base_url: str) -> str:
    """A streaming chat through the openai SDK; the raw stream must end with [DONE]."""
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0)
    with client:
        stream = client.chat.completions.create(
            model="claude-sonnet-4-20250514",
            messages=[{"role": "user", "content": "Hello from a container"}],
            stream=True,
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    body = {"model": "claude-sonnet-4-20250514", "stream": True, "messages": [
        {"role": "user", "content": "again"}]}  # fmt: skip
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return text


def _requests_logged(container: str) -> int:
    out = run(DOCKER, "exec", container, "ki2api", "usage", "--json").stdout
    return sum(int(row["requests"]) for row in json.loads(out))


def _wait_usage(container: str, at_least: int) -> int:
    deadline = time.monotonic() + 20
    while (n := _requests_logged(container)) < at_least and time.monotonic() < deadline:
        time.sleep(0.2)
    return n


def _serve_with_ro_tokens(emulator: str, name: str, volume: str) -> None:
    cache, token_file, account_id = _token_dir(emulator)
    before = token_file.read_bytes()
    run(DOCKER, "run", "-d", "--name", name, "-p", "127.0.0.1::8989", "--health-interval=1s",
        "-e", f"API_KEY={KEY}", *_kiro_env(emulator),
        "-v", f"{cache}:/home/ki2api/.aws/sso/cache:ro",
        "-v", f"{volume}:/data", IMAGE)  # fmt: skip
    wait_healthy(name)
    url = f"http://127.0.0.1:{host_port(name, 8989)}"
    _stream_chat(url)
    # The expired token was refreshed (the chat worked) and kept in memory: the file is untouched.
    assert token_file.read_bytes() == before
    assert "keeping it in memory" in run(DOCKER, "logs", name).stderr
    served = _wait_usage(name, 2)
    assert served >= 2
    # The store is on the volume: a restart keeps it.
    run(DOCKER, "restart", "-t", "10", name)
    wait_healthy(name)
    assert _requests_logged(name) >= served
    # The in-memory token is gone and the emulator rotated the refresh token, so the file's is
    # spent: the IDE on the host keeps the mounted file fresh, and the gateway re-reads it.
    expire_now(emulator, account_id, token_file)
    _stream_chat(f"http://127.0.0.1:{host_port(name, 8989)}")
    shutil.rmtree(cache.parents[2], ignore_errors=True)


def _compose_up_down(emulator: str, project: str, tmp: Path) -> None:
    cache, _, _ = _token_dir(emulator)
    override = tmp / "compose.test.yml"
    names = ("KIRO_API_BASE", "KIRO_AUTH_BASE", "KIRO_OIDC_BASE")
    env_lines = "".join(f"      {name}: {emulator}\n" for name in names)
    override.write_text(
        'version: "2.4"\nservices:\n  ki2api:\n    environment:\n'
        + env_lines
        + "    healthcheck:\n      interval: 1s\n"
    )
    env = {**os.environ, "API_KEY": KEY, "KI2API_IMAGE": IMAGE, "KIRO_TOKEN_DIR": str(cache),
           "KI2API_PORT": "0", "COMPOSE_PROJECT_NAME": project}  # fmt: skip
    files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(override)]

    def compose(*args: str) -> str:
        proc = subprocess.run([COMPOSE, *files, *args], env=env, capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip
        assert proc.returncode == 0, f"docker-compose {' '.join(args)}:\n{proc.stderr}"
        return proc.stdout

    try:
        compose("up", "-d", "--no-build")
        container = compose("ps", "-q", "ki2api").strip()
        wait_healthy(container)
        _stream_chat(f"http://127.0.0.1:{host_port(container, 8989)}")
        inspect = json.loads(run(DOCKER, "inspect", container).stdout)[0]
        assert inspect["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        mounts = {m["Destination"]: m for m in inspect["Mounts"]}
        assert mounts["/home/ki2api/.aws/sso/cache"]["RW"] is False
        assert mounts["/data"]["Type"] == "volume"
    finally:
        compose("down", "-v")
    assert (
        run(DOCKER, "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}").stdout
        == ""
    )
    shutil.rmtree(cache.parents[2], ignore_errors=True)


def _space_run(emulator: str, name: str, volume: str, secrets: dict[str, str]) -> str:
    """Start the Space image as Hugging Face runs a Docker Space: its port (7860), uid 1000, the
    secrets in the environment, a read-only root with a tmpfs /tmp and a /data volume."""
    env = [arg for k, v in {"API_KEY": KEY, **secrets}.items() for arg in ("-e", f"{k}={v}")]
    run(DOCKER, "run", "-d", "--name", name, "-p", "127.0.0.1::7860", "--health-interval=1s",
        "--read-only", "--tmpfs", "/tmp", "-v", f"{volume}:/data", "--user", str(UID),
        *env, *_kiro_env(emulator), SPACE_IMAGE)  # fmt: skip
    wait_healthy(name)
    url = f"http://127.0.0.1:{host_port(name, 7860)}"
    _stream_chat(url)
    return url


def _space_run_mode(emulator: str, base: str, name: str, volume: str, tmp: Path) -> None:
    space = tmp / "space"
    run(str(ROOT / "deploy/huggingface/make_space.sh"), str(space))
    front = (space / "README.md").read_text().split("---")[1]
    assert "sdk: docker" in front and "app_port: 7860" in front
    for path in (ROOT / "deploy/container/wheels").iterdir():  # build offline here
        shutil.copy(path, space / "deploy/container/wheels")
    _build(base, space, SPACE_IMAGE)
    # The whole token JSON in one secret: refreshed tokens go to its file on /data (writable).
    cache, token_file, _ = _token_dir(emulator)
    given = json.loads(token_file.read_text())
    _space_run(emulator, name, volume, {"KIRO_CREDS_JSON": json.dumps(given)})
    saved = run(DOCKER, "exec", name, "cat", "/data/secret-login/kiro-auth-token.json").stdout
    assert json.loads(saved)["accessToken"] != given["accessToken"]
    logs = run(DOCKER, "logs", name)
    assert given["refreshToken"] not in logs.stdout + logs.stderr
    run(DOCKER, "rm", "-f", name)
    # A refresh token alone (KIRO_REFRESH_TOKEN), on a fresh /data.
    run(DOCKER, "volume", "rm", volume)
    cache2, token_file2, _ = _token_dir(emulator)
    refresh = json.loads(token_file2.read_text())["refreshToken"]
    _space_run(emulator, name, volume, {"KIRO_REFRESH_TOKEN": refresh})
    for path in (cache, cache2):
        shutil.rmtree(path.parents[2], ignore_errors=True)


def _demo(name: str) -> None:
    """`ki2api demo` in the container: the gateway and the built-in emulator, nothing mounted."""
    run(DOCKER, "run", "-d", "--name", name, "-p", "127.0.0.1::8989", "--health-interval=1s",
        "-e", f"API_KEY={KEY}", IMAGE, "ki2api", "demo")  # fmt: skip
    wait_healthy(name)
    _stream_chat(f"http://127.0.0.1:{host_port(name, 8989)}")


@pytest.mark.long(120)
@pytest.mark.timeout(900)
def test_container_image_compose_and_space(engine: str, tmp_path: Path) -> None:
    started = time.monotonic()
    with cache_lock("ki2api-image"):  # test_scale_out_compose.py builds the same image
        run("make", "-s", "-C", str(ROOT), "wheelhouse", timeout=300)
        _build(engine, ROOT, IMAGE)
    tag = uuid.uuid4().hex[:8]
    names = [f"ki2api-ct-{tag}", f"ki2api-ct-space-{tag}", f"ki2api-ct-demo-{tag}"]
    volumes = [f"ki2api-ct-data-{tag}", f"ki2api-ct-space-data-{tag}"]
    try:
        with serve_on(create_emulator_app(EmulatorConfig(accounts=0)), bridge_gateway()) as em:
            _serve_with_ro_tokens(em, names[0], volumes[0])
            _compose_up_down(em, f"ki2apict{tag}", tmp_path)
            _space_run_mode(em, engine, names[1], volumes[1], tmp_path)
        _demo(names[2])
    finally:
        for name in names:
            run(DOCKER, "rm", "-f", "-v", name, check=False)
        for volume in volumes:
            run(DOCKER, "volume", "rm", volume, check=False)
    print(f"container test: {time.monotonic() - started:.0f} s")
