"""The openai SDK's own API tests, from its sdist (the version in our lock), against Ki2API.

The sdist ships `tests/api_resources/…`, written for a mock server at `TEST_API_BASE_URL`. Each
call runs sync and async (httpx2 and aiohttp transports) with "loose" and "strict"
(pydantic-validated) clients, through the plain, raw-response and streaming-response wrappers.
They run in a subprocess from a cached venv (see conftest.py) against a gateway on 127.0.0.1
whose upstream is the Kiro emulator.
"""

from __future__ import annotations

import re
import shutil
import sys
import tarfile
from collections import Counter
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.conftest import (
    CLIENT_KEY,
    KIRO_MODEL,
    clean_env,
    locked,
    read_junit,
    read_requirements,
    run,
    run_checked,
    tail,
    tool_venv,
    upstream_rejections,
)

COMPLETIONS = "tests/api_resources/chat/test_completions.py"
MODELS = "tests/api_resources/test_models.py"

# What runs: chat.completions.create (overload_1 = non-streaming, overload_2 = stream=True) and
# models.list / models.retrieve, each through every client flavour.
# Deselected, each for a reason (never silently):
#  - `*_with_all_params_*`: sends every field with the placeholder values a mock server takes and
#    OpenAI itself refuses (max_tokens=0 and max_completion_tokens=0, audio output, `functions`
#    whose schema is {"foo": "bar"}, …); Ki2API answers 400 as OpenAI does.
#  - chat.completions retrieve/update/list/delete (stored completions, /chat/completions/{id}):
#    Ki2API stores nothing, so these routes do not exist.
#  - models.delete (deleting fine-tuned models): no such route.
SELECTION = (
    "(test_completions and create and not with_all_params) or (test_models and (list or retrieve))"
)

# Each of these must have run once per client flavour: sync loose/strict, async
# loose/strict/aiohttp, so an SDK release that renames tests cannot empty the selection.
EXPECTED = {
    f"{kind}_{op}": 5
    for kind in ("test_method", "test_raw_response", "test_streaming_response")
    for op in ("create_overload_1", "create_overload_2", "list", "retrieve")
}


def sdk_sources(cache: Path, sdk_version: str) -> Path:
    """The extracted `openai` sdist of this version (downloaded once into the cache)."""
    dest = cache / f"openai-{sdk_version}"
    with locked(cache / "sdist.lock"):
        if (dest / COMPLETIONS).is_file() and (dest / MODELS).is_file():
            return dest
        downloads = cache / "sdist"
        pip = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet"]
        spec = f"openai=={sdk_version}"
        run_checked(
            [*pip, "--no-binary", ":all:", "--no-deps", "-d", downloads, spec],
            what=f"download the {spec} sdist",
        )
        staging = cache / "sdist-extract"
        shutil.rmtree(staging, ignore_errors=True)
        with tarfile.open(downloads / f"openai-{sdk_version}.tar.gz") as tar:
            tar.extractall(staging, filter="data")
        shutil.rmtree(dest, ignore_errors=True)
        (staging / f"openai-{sdk_version}").rename(dest)
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def sdk_model_ids(src: Path) -> set[str]:
    """Every model id the selected tests send, read from the test files themselves."""
    chat, models = (src / COMPLETIONS).read_text(), (src / MODELS).read_text()
    ids = set(re.findall(r'\bmodel="([^"]+)"', chat + models))
    ids |= set(re.findall(r'models\.(?:\w+\.)?retrieve\(\s*"([^"]+)"', models))
    return ids


def ran_per_function(cases: tuple[str, ...]) -> Counter[str]:
    """How many parametrised cases of each test function ran ("cls::test_x[strict]" -> test_x)."""
    return Counter(c.split("::")[-1].split("[")[0] for c in cases)


@pytest.mark.timeout(900)  # the first run on a machine builds the venv and fetches the sdist
def test_openai_sdk_api_tests_pass(conformance_cache: Path, gateway_factory: Any, tmp_path: Path):
    sdk_version = version("openai")
    reqs = [*read_requirements("requirements-sdk.txt"), f"openai[aiohttp]=={sdk_version}"]
    bin_dir = tool_venv(conformance_cache, "openai-sdk-venv", reqs)
    src = sdk_sources(conformance_cache, sdk_version)
    models = sdk_model_ids(src)
    assert models, f"found no model ids in the openai {sdk_version} test files"

    gw = gateway_factory(api_keys=(CLIENT_KEY,), model_overrides=dict.fromkeys(models, KIRO_MODEL))
    junit = tmp_path / "sdk-junit.xml"
    cmd = [bin_dir / "python", "-m", "pytest", "-o", "addopts=", "-p", "no:cacheprovider"]
    cmd += ["-q", "-rfE", f"--junitxml={junit}", COMPLETIONS, MODELS, "-k", SELECTION]
    proc = run(cmd, cwd=src, env=clean_env(TEST_API_BASE_URL=f"{gw.url}/v1"), timeout=300)

    result = read_junit(junit)
    report = f"openai {sdk_version} API tests vs Ki2API: {result.summary()}\n{tail(proc.stdout)}"
    assert proc.returncode == 0 and result.failed == (), report
    assert result.passed > 0 and result.skipped == 0, report
    ran = ran_per_function(result.cases)
    assert {name: ran[name] for name in EXPECTED} == EXPECTED, report
    assert not upstream_rejections(gw), upstream_rejections(gw)
