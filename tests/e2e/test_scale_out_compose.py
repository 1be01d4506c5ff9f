"""The scale-out compose file (deploy/scale-out/, docs/scale-out.md) run as its documentation
says: Redis up, the login added to the store with `docker-compose run`, then two replicas behind
nginx; chats through nginx with the openai SDK (streamed and not) reach both replicas, the
expired token is refreshed once for both, Redis holds one usage row per request, the
replicas see the client's address nginx forwards, and a console sign-in through nginx (ADMIN_KEY)
works on both replicas.

No registry here: the ki2api image is built as in test_container.py, and the official `redis:7`
and `nginx:stable` images are stood in for by one image of Debian's `redis-server` and `nginx`
(mmdebstrap, cached by recipe; tests/support/container.py). Needs root and Debian's
`docker.io`, `docker-compose` and `mmdebstrap`; without an engine it skips, saying why, and with
KI2API_REQUIRE_CONTAINER=1 (CI) that is a failure.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from kiro_emulator import EmulatorConfig
from kiro_emulator import create_app as create_emulator_app
from tests.conftest import make_expired_account
from tests.support.container import (
    COMPOSE,
    DOCKER,
    SERVICES_PACKAGES,
    NoEngine,
    base_image,
    bridge_gateway,
    cache_lock,
    docker_engine,
    host_port,
    run,
    serve_on,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "scale-out" / "docker-compose.yml"
KEY = "sk-scale-out-test"
ADMIN_KEY = "admin-scale-out-test"
IMAGE = "ki2api-test:latest"  # the image test_container.py builds (the same build, cached)
MODEL = "claude-sonnet-4-20250514"
REQUESTS = 10
UID = 1000  # the image's user


def _unavailable(reason: str) -> None:
    if os.environ.get("KI2API_REQUIRE_CONTAINER") == "1":
        pytest.fail(f"container test required (KI2API_REQUIRE_CONTAINER=1) but: {reason}")
    pytest.skip(f"no container engine: {reason}")


@pytest.fixture
def images(tmp_path: Path) -> Iterator[str]:
    """The services image's tag (redis-server and nginx), the ki2api image built, an engine
    running for the test."""
    try:
        with docker_engine(tmp_path):
            try:
                base = base_image()
                services = base_image(packages=SERVICES_PACKAGES, name="services")
            except FileNotFoundError as exc:  # no mmdebstrap and no cached tar
                _unavailable(f"cannot build the base images: {exc}")
            with cache_lock("ki2api-image"):
                run("make", "-s", "-C", str(ROOT), "wheelhouse", timeout=300)
                run(DOCKER, "build", "-q", "--build-arg", f"BASE_IMAGE={base}", "-t", IMAGE,
                    str(ROOT), timeout=400)  # fmt: skip
            yield services
    except NoEngine as exc:
        _unavailable(str(exc))


def _login(emulator: str) -> tuple[Path, str]:
    """A token directory as the Kiro IDE leaves it (the image's user owns it), its access token
    expired. -> (the directory, the emulator's account id)."""
    home = Path(tempfile.mkdtemp(prefix="ki2api-so-"))
    os.chmod(home, 0o755)
    acct = make_expired_account(emulator, home)
    cache = acct.token_file.parent
    for path in (home / ".aws", home / ".aws" / "sso", cache, acct.token_file):
        os.chown(path, UID, UID)
    return cache, acct.id


class Compose:
    def __init__(self, project: str, services: str, emulator: str, tmp: Path) -> None:
        override = tmp / "compose.test.yml"
        kiro = "".join(
            f"      {name}: {emulator}\n"
            for name in ("KIRO_API_BASE", "KIRO_AUTH_BASE", "KIRO_OIDC_BASE")
        )
        override.write_text(
            'version: "2.4"\nservices:\n'
            + "".join(f"  {s}:\n    environment:\n{kiro}" for s in ("ki2api-1", "ki2api-2"))
        )
        self.files = ["-f", str(COMPOSE_FILE), "-f", str(override)]
        self.env = {**os.environ, "API_KEY": KEY, "ADMIN_KEY": ADMIN_KEY, "KI2API_PORT": "0",
                    "KI2API_IMAGE": IMAGE, "REDIS_IMAGE": services, "NGINX_IMAGE": services,
                    "HEALTH_INTERVAL": "1s", "COMPOSE_PROJECT_NAME": project}  # fmt: skip

    def __call__(self, *args: str, timeout: float = 180) -> str:
        proc = subprocess.run([COMPOSE, *self.files, *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)  # fmt: skip
        assert proc.returncode == 0, f"docker-compose {' '.join(args)}:\n{proc.stderr}"
        return proc.stdout

    def container(self, service: str) -> str:
        """The id of the service's container (asked of the engine, cheaper than compose)."""
        fmt = '{{.ID}} {{.Label "com.docker.compose.service"}}'
        label = f"label=com.docker.compose.project={self.env['COMPOSE_PROJECT_NAME']}"
        listed = run(DOCKER, "ps", "--filter", label, "--format", fmt).stdout.split("\n")
        found = [line.split()[0] for line in listed if line.endswith(f" {service}")]
        assert len(found) == 1, (service, listed)
        return found[0]


def _chat(client: openai.OpenAI, n: int) -> str:
    """One chat through nginx (every other one streamed); the replica that answered."""
    text = f"request {n}"
    chat = client.chat.completions.with_raw_response
    if n % 2:
        stream = chat.create(model=MODEL, messages=[{"role": "user", "content": text}], stream=True)
        chunks = list(stream.parse())
        answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        served_by = stream.headers["x-served-by"]
    else:
        done = chat.create(model=MODEL, messages=[{"role": "user", "content": text}])
        answer = done.parse().choices[0].message.content or ""
        served_by = done.headers["x-served-by"]
    assert answer == f"Echo: {text}"
    return served_by


def _requests_logged(container: str) -> int:
    out = run(DOCKER, "exec", container, "ki2api", "usage", "--json").stdout
    return sum(int(row["requests"]) for row in json.loads(out))


def _addresses(container: str) -> list[str]:
    inspect = json.loads(run(DOCKER, "inspect", container).stdout)[0]
    return [net["IPAddress"] for net in inspect["NetworkSettings"]["Networks"].values()]


def _replica_addresses(compose: Compose) -> dict[str, str]:
    """Each replica's address on the project's network -> its service name."""
    return {
        f"{ip}:8989": service
        for service in ("ki2api-1", "ki2api-2")
        for ip in _addresses(compose.container(service))
    }


def _through_nginx(compose: Compose, emulator: str, account_id: str) -> None:
    proxy = compose.container("proxy")
    url = f"http://127.0.0.1:{host_port(proxy, 80)}"
    health = httpx.get(f"{url}/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)
    with client, ThreadPoolExecutor(4) as pool:
        served = list(pool.map(lambda n: _chat(client, n), range(REQUESTS)))
    replicas = _replica_addresses(compose)
    assert {replicas[addr] for addr in served} == {"ki2api-1", "ki2api-2"}, served
    # One shared store: the expired token was refreshed once, for both replicas.
    stats = httpx.get(f"{emulator}/_emulator/stats", timeout=10).json()["accounts"]
    assert stats[account_id]["refreshes"] == 1
    # Usage rows are in Redis: either replica sums the same stream.
    deadline = time.monotonic() + 20
    while (logged := _requests_logged(compose.container("ki2api-2"))) < REQUESTS:
        assert time.monotonic() < deadline, f"{logged} usage rows for {REQUESTS} requests"
        time.sleep(0.2)
    assert logged == REQUESTS
    assert _requests_logged(compose.container("ki2api-1")) == REQUESTS
    _clients_seen_through_nginx(compose)
    _console_through_nginx(url)
    # A body over nginx's default limit (1 MB) reaches a replica, which answers it itself.
    big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 2_000_000}]}
    answer = httpx.post(f"{url}/v1/chat/completions", json=big, headers=_auth(), timeout=60)
    assert answer.headers["content-type"].startswith("application/json"), answer.text[:300]
    assert "x-request-id" in answer.headers and "x-served-by" in answer.headers


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def _console_through_nginx(url: str) -> None:
    """A console sign-in through nginx (its Origin check needs the Host the browser sent,
    port included) gives a session both replicas honour."""
    with httpx.Client(base_url=url, timeout=10) as web:
        signed = web.post("/ui/api/login", json={"admin_key": ADMIN_KEY}, headers={"Origin": url})
        assert signed.status_code == 200, signed.text
        served = set()
        for _ in range(6):
            answer = web.get("/ui/api/session")
            assert answer.status_code == 200, answer.text
            served.add(answer.headers["x-served-by"])
    assert len(served) == 2, served


def _clients_seen_through_nginx(compose: Compose) -> None:
    """The replicas log the client's address nginx forwards (port 0: a forwarded one), not
    nginx's own: FORWARDED_ALLOW_IPS with X-Forwarded-For replaced by nginx."""
    proxy_ips = set(_addresses(compose.container("proxy")))
    for service in ("ki2api-1", "ki2api-2"):
        logs = run(DOCKER, "logs", compose.container(service)).stdout
        chats = [line for line in logs.splitlines() if '"POST /v1/chat/completions' in line]
        assert chats and all(":0 - " in line for line in chats), chats
        assert not any(f" {ip}:" in line for line in chats for ip in proxy_ips), chats


@pytest.mark.long(40)
@pytest.mark.timeout(900)
def test_two_replicas_on_redis_behind_nginx(images: str, tmp_path: Path) -> None:
    project = f"ki2apiso{uuid.uuid4().hex[:8]}"
    with serve_on(create_emulator_app(EmulatorConfig(accounts=0)), bridge_gateway()) as em:
        cache, account_id = _login(em)
        compose = Compose(project, images, em, tmp_path)
        try:
            compose("up", "-d", "--no-build", "redis")
            compose("run", "--rm", "-v", f"{cache}:/login:ro", "ki2api-1",
                    "ki2api", "accounts", "add", "/login/kiro-auth-token.json")  # fmt: skip
            compose("up", "-d", "--no-build")
            _through_nginx(compose, em, account_id)
        finally:
            compose("down", "-v")
            shutil.rmtree(cache.parents[2], ignore_errors=True)
    label = f"label=com.docker.compose.project={project}"
    assert run(DOCKER, "ps", "-aq", "--filter", label).stdout == ""
    assert run(DOCKER, "volume", "ls", "-q", "--filter", label).stdout == ""  # redis-data too
