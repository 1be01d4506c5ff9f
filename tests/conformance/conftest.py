"""Shared pieces of the conformance suites: cached tool venvs, a clean subprocess env, JUnit.

Both suites run third-party tools (the openai SDK's own tests, schemathesis) in subprocesses,
each from its own venv under the cache directory, built once per machine from the pinned
requirement files in this folder. Only the first run needs PyPI; every request the tools make
goes to the gateway on 127.0.0.1.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Gateway

__all__ = [
    "ANTHROPIC_CLIENT_KEY",
    "CLIENT_KEY",
    "KIRO_MODEL",
    "JUnitResult",
    "clean_env",
    "locked",
    "read_junit",
    "read_requirements",
    "require_anthropic_frontend",
    "run",
    "run_checked",
    "sdist_sources",
    "tail",
    "tool_venv",
    "upstream_rejections",
]

HERE = Path(__file__).resolve().parent
CACHE_ENV = "KI2API_CONFORMANCE_CACHE"
SKIP_ENV = "KI2API_SKIP_CONFORMANCE"
CLIENT_KEY = "My API Key"  # the openai SDK's tests hard-code this key; schemathesis sends it too
ANTHROPIC_CLIENT_KEY = "my-anthropic-api-key"  # the anthropic SDK's tests hard-code this key
KIRO_MODEL = "claude-sonnet-4.5"  # every model id the tools use is mapped to this Kiro id
ANTHROPIC_ROUTES = HERE.parents[1] / "src" / "ki2api" / "server" / "routes_anthropic.py"
INSTALL_TIMEOUT_S = 900
_DROP_ENV = {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
_DROP_ENV_PREFIXES = ("OPENAI_", "ANTHROPIC_", "SCHEMATHESIS_", "PYTEST_", "HYPOTHESIS_")


def _default_cache() -> Path:
    in_venv = sys.prefix != sys.base_prefix
    base = Path(sys.prefix) if in_venv else HERE.parents[1] / ".venv"
    return base / "conformance-cache"


@pytest.fixture(scope="session")
def conformance_cache() -> Path:
    """Where tool venvs and the sdist live (`$KI2API_CONFORMANCE_CACHE`, else .venv/…)."""
    if os.environ.get(SKIP_ENV):
        pytest.skip(f"{SKIP_ENV} is set: conformance suites skipped on request")
    cache = Path(os.environ.get(CACHE_ENV) or _default_cache())
    cache.mkdir(parents=True, exist_ok=True)
    return cache


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock file, so two pytest processes never build the same venv at once."""
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run(
    cmd: Sequence[str | Path],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = INSTALL_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """Run `cmd`, stdout and stderr together in `.stdout`; never raises on a non-zero exit."""
    return subprocess.run(
        [str(c) for c in cmd],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_checked(cmd: Sequence[str | Path], *, what: str, cwd: Path | None = None) -> None:
    proc = run(cmd, cwd=cwd)
    if proc.returncode != 0:
        pytest.fail(f"could not {what} (exit {proc.returncode}):\n{tail(proc.stdout)}")


def tail(text: str, limit: int = 8000) -> str:
    return text if len(text) <= limit else "…" + text[-limit:]


def read_requirements(name: str) -> list[str]:
    """Requirement lines of a file in this folder, comments and blanks dropped."""
    lines = (HERE / name).read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def tool_venv(cache: Path, name: str, requirements: Sequence[str]) -> Path:
    """The bin/ directory of a venv at `cache/name` holding exactly `requirements`.

    Built on first use (or when the pins or the Python change), reused afterwards.
    """
    venv = cache / name
    stamp = venv / "ki2api-requirements.txt"
    wanted = "\n".join([f"# {sys.version.split()[0]}", *requirements]) + "\n"
    with locked(cache / f"{name}.lock"):
        if stamp.is_file() and stamp.read_text(encoding="utf-8") == wanted:
            return venv / "bin"
        shutil.rmtree(venv, ignore_errors=True)
        run_checked([sys.executable, "-m", "venv", venv], what=f"create the venv {venv}")
        req = venv / "requirements.txt"
        req.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        pip = [venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-compile"]
        run_checked([*pip, "--disable-pip-version-check", "-r", req], what=f"install {name}")
        stamp.write_text(wanted, encoding="utf-8")
    return venv / "bin"


def require_anthropic_frontend() -> None:
    """Skip (with the reason) while the Anthropic frontend is not in the tree yet."""
    if not ANTHROPIC_ROUTES.is_file():
        pytest.skip(f"the Anthropic frontend ({ANTHROPIC_ROUTES.name}) does not exist yet")


def sdist_sources(cache: Path, package: str, version: str, needed: Sequence[str]) -> Path:
    """The extracted sdist of `package==version` (downloaded once into the cache); `needed`
    are paths inside it that must exist (the test files a suite runs)."""
    dest = cache / f"{package}-{version}"
    with locked(cache / "sdist.lock"):
        if all((dest / path).is_file() for path in needed):
            return dest
        downloads = cache / "sdist"
        pip = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet"]
        spec = f"{package}=={version}"
        run_checked(
            [*pip, "--no-binary", ":all:", "--no-deps", "-d", downloads, spec],
            what=f"download the {spec} sdist",
        )
        staging = cache / "sdist-extract"
        shutil.rmtree(staging, ignore_errors=True)
        with tarfile.open(downloads / f"{package}-{version}.tar.gz") as tar:
            tar.extractall(staging, filter="data")
        shutil.rmtree(dest, ignore_errors=True)
        (staging / f"{package}-{version}").rename(dest)
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without proxies, client settings or our venv; plus `extra`.

    No proxy variables: every request of the tools must go straight to 127.0.0.1.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _DROP_ENV
        and not k.upper().startswith(_DROP_ENV_PREFIXES)
        and not k.upper().endswith("_PROXY")
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


@dataclass(frozen=True)
class JUnitResult:
    tests: int
    failures: int
    errors: int
    skipped: int
    cases: tuple[str, ...]  # "classname::name" of every test case
    failed: tuple[str, ...]  # the cases that failed or errored

    @property
    def passed(self) -> int:
        return self.tests - self.failures - self.errors - self.skipped

    def summary(self) -> str:
        return (
            f"{self.tests} run: {self.passed} passed, {self.failures} failed, "
            f"{self.errors} errors, {self.skipped} skipped"
        )


def read_junit(path: Path) -> JUnitResult:
    """Counts and case names of a JUnit XML report (pytest's or schemathesis')."""
    if not path.is_file():
        pytest.fail(f"no JUnit report at {path}: the tool did not get as far as running tests")
    root = ET.parse(path).getroot()
    cases, failed = [], []
    failures = errors = skipped = 0
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        cases.append(name)
        failures += len(case.findall("failure"))
        errors += len(case.findall("error"))
        skipped += len(case.findall("skipped"))
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(name)
    return JUnitResult(len(cases), failures, errors, skipped, tuple(cases), tuple(failed))


def upstream_rejections(gateway: Gateway) -> str:
    """'' when the emulator accepted every chat request this gateway forwarded, else a report.

    A rejection means Ki2API sent Kiro something it refuses ("Improperly formed request"): it
    must either repair the request or refuse it itself with a precise 400.
    """
    stats = gateway.emulator_stats()
    rejected = stats.get("chat_requests", 0) - stats.get("served", 0)
    if rejected == 0:
        return ""
    rules = Counter(
        q["rejected"] for q in gateway.emulator_requests(limit=1000) if q.get("rejected")
    )
    return f"the emulator rejected {rejected} forwarded chat request(s): {dict(rules)}"
