"""A container engine for the container test: dockerd (started here when none runs, stopped by
whoever started it once no other test run uses it), a Debian bookworm base image made with
mmdebstrap (cached by its recipe), and the emulator served where containers on the default
bridge can reach it.

No registry image can be pulled on our machines, so the base is built from Debian's packages and
`docker import`ed; the Dockerfile takes it as its BASE_IMAGE. `/usr/bin/docker` is called by its
full path: another `docker` client may come first on PATH (one without the classic builder).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.servers import serve_in_thread

DOCKER = "/usr/bin/docker"
COMPOSE = "docker-compose"
BASE_PACKAGES = ("python3", "python3-venv", "passwd", "ca-certificates", "libstdc++6")
# The scale-out test's stand-in for the official redis and nginx images: Debian's packages.
SERVICES_PACKAGES = ("redis-server", "nginx")


def mmdebstrap(packages: tuple[str, ...]) -> tuple[str, ...]:
    """The recipe of a bookworm root with `packages` (its hash names the cached tar)."""
    return (
        "mmdebstrap",
        "--variant=essential",
        "--include=" + ",".join(packages),
        "--aptopt=Acquire::Check-Valid-Until false",
        "--aptopt=Acquire::Check-Date false",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--format=tar",
        "bookworm",
    )


MMDEBSTRAP = mmdebstrap(BASE_PACKAGES)
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ki2api"


class NoEngine(Exception):
    """No container engine can be had here; the message says precisely why."""


def run(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def _engine_answers() -> bool:
    try:
        return (
            run(
                DOCKER, "info", "--format", "{{.ServerVersion}}", timeout=20, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def docker_engine(log_dir: Path) -> Iterator[None]:
    """A running dockerd: the one already running, else one started here.

    Two test runs on one machine may share it: each holds a shared lock on `users.lock` while it
    uses the engine, and the run that started dockerd stops it only when it can take that lock
    alone (else it is left running for the other run). Checking and starting happen under
    `start.lock`, so two runs never start two daemons."""
    if not Path(DOCKER).exists():
        raise NoEngine(f"{DOCKER} is not installed (apt-get install docker.io docker-compose)")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with (CACHE_DIR / "dockerd-users.lock").open("a") as users:
        fcntl.flock(users, fcntl.LOCK_SH)
        with (CACHE_DIR / "dockerd-start.lock").open("a") as start:
            fcntl.flock(start, fcntl.LOCK_EX)
            proc = None if _engine_answers() else _start_dockerd(log_dir)
        try:
            yield
        finally:
            if proc is not None:
                _stop_unless_shared(proc, users)


def _start_dockerd(log_dir: Path) -> subprocess.Popen[bytes]:
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        raise NoEngine("no Docker engine answers and dockerd cannot be started here (needs root)")
    log = log_dir / "dockerd.log"
    with log.open("wb") as out:
        # At nice 10, as the soak test's load: image builds take the CPU the suite leaves idle.
        proc = subprocess.Popen(
            ["nice", "-n", "10", dockerd],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 40
    while not _engine_answers():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-1500:]
            _stop(proc)
            raise NoEngine(f"dockerd did not start (exit {proc.poll()}): {tail}")
        time.sleep(0.3)
    return proc


def _stop_unless_shared(proc: subprocess.Popen[bytes], users: Any) -> None:
    try:
        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another test run is using the engine: it stays up
    _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def base_image(
    mirror: str = "http://deb.debian.org/debian",
    packages: tuple[str, ...] = BASE_PACKAGES,
    name: str = "base",
) -> str:
    """The mmdebstrap-made image's tag, built once per recipe (the tar cached on disk; two test
    runs building the same recipe wait for each other)."""
    recipe_args = MMDEBSTRAP if packages == BASE_PACKAGES else mmdebstrap(packages)
    recipe = json.dumps([*recipe_args, mirror])
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    tag = f"ki2api-test-{name}:{key}"
    with cache_lock(f"image-{name}-{key}"):
        if run(DOCKER, "image", "inspect", tag, check=False).returncode == 0:
            return tag
        tar = CACHE_DIR / f"{name}-bookworm-{key}.tar"
        if not tar.exists():
            partial = tar.with_suffix(".partial")
            run("nice", "-n", "10", *recipe_args, str(partial), mirror, timeout=600)
            partial.rename(tar)
        run(DOCKER, "import", str(tar), tag, timeout=300)
    return tag


@contextlib.contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """An exclusive lock between test runs on this machine (a file in the cache directory)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with (CACHE_DIR / f"{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def bridge_gateway() -> str:
    """The host's address on the default bridge (what containers reach the host by)."""
    out = run(DOCKER, "network", "inspect", "bridge", "--format", "{{json .IPAM.Config}}").stdout
    config = json.loads(out)[0]
    if config.get("Gateway"):
        return str(config["Gateway"])
    return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))  # what dockerd gives docker0


def serve_on(app: Any, host: str) -> contextlib.AbstractContextManager[str]:
    """Serve `app` on `host` (a port the kernel picks) in a thread; its base URL."""
    return serve_in_thread(app, host=host)


def host_port(container: str, port: int) -> int:
    out = run(DOCKER, "port", container, f"{port}/tcp").stdout.split()[0]
    return int(out.rsplit(":", 1)[1])


def wait_healthy(container: str, timeout: float = 60) -> None:
    """Until the container's HEALTHCHECK says healthy (the image's own check on /health)."""
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = run(
            DOCKER, "inspect", container, "--format", "{{.State.Health.Status}}|{{.State.Status}}"
        ).stdout.strip()
        if status.startswith("healthy"):
            return
        if status.endswith("|exited"):
            break
        time.sleep(0.2)
    logs = run(DOCKER, "logs", container, check=False)
    raise AssertionError(f"{container} not healthy ({status}):\n{logs.stdout}\n{logs.stderr}")
