"""The anthropic SDK's own API tests, from its sdist (the version in our lock), against Ki2API.

The sdist ships `tests/api_resources/…`, written for a mock server at `TEST_API_BASE_URL`. Each
call runs sync and async (httpx2 and aiohttp transports) with "loose" and "strict"
(pydantic-validated) clients, through the plain, raw-response and streaming-response wrappers.
They run in a subprocess from a cached venv (see conftest.py) against a gateway on 127.0.0.1
whose upstream is the Kiro emulator. The tests send the key `my-anthropic-api-key` as
`x-api-key` and the model `claude-opus-5-5`, a version no account offers: since issue 10
it is a 404 rather than an older Opus (docs/models.md), so it is mapped like every other name
the catalogue does not resolve.
"""

from __future__ import annotations

import re
from collections import Counter
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from ki2api.core.models import default_catalogue
from tests.conformance.conftest import (
    ANTHROPIC_CLIENT_KEY,
    KIRO_MODEL,
    clean_env,
    read_junit,
    read_requirements,
    require_anthropic_frontend,
    run,
    sdist_sources,
    tail,
    tool_venv,
    upstream_rejections,
)

MESSAGES = "tests/api_resources/test_messages.py"
MODELS = "tests/api_resources/test_models.py"

# What runs: messages.create (overload_1 = non-streaming, overload_2 = stream=True),
# messages.count_tokens, models.list and models.retrieve, each through every client flavour.
# Deselected, each for a reason (never silently):
#  - `*_with_all_params*`: sends every field with the placeholder values a mock server takes and
#    the real API refuses (container skills, MCP servers with url "url", tools with
#    placeholder schemas, `after_id="after_id"`, a made-up workspace id, …).
#  - `test_deprecated_model_warning`: checks a client-side warning for retired model names
#    (Claude 1/2/3); the real API answers 404 for most of them as well.
#  - messages.batches (tests/api_resources/messages/): Ki2API has no batch API.
SELECTION = (
    "(test_messages and (create or count_tokens) and not with_all_params)"
    " or (test_models and (list or retrieve) and not with_all_params)"
)

# Each of these must have run once per client flavour: sync loose/strict, async
# loose/strict/aiohttp, so an SDK release that renames tests cannot empty the selection.
EXPECTED = {
    f"{kind}_{op}": 5
    for kind in ("test_method", "test_raw_response", "test_streaming_response")
    for op in ("create_overload_1", "create_overload_2", "count_tokens", "list", "retrieve")
}


def sdk_model_ids(src: Path) -> set[str]:
    """Every model id the selected tests send, read from the test files themselves."""
    messages, models = (src / MESSAGES).read_text(), (src / MODELS).read_text()
    ids = set(re.findall(r'\bmodel="([^"]+)"', messages))
    ids |= set(re.findall(r'\bmodel_id="([^"]+)"', models))
    return ids - {""}  # model_id="" is the client-side check for an empty path parameter


def ran_per_function(cases: tuple[str, ...]) -> Counter[str]:
    """How many parametrised cases of each test function ran ("cls::test_x[strict]" -> test_x)."""
    return Counter(c.split("::")[-1].split("[")[0] for c in cases)


@pytest.mark.timeout(900)  # the first run on a machine builds the venv and fetches the sdist
def test_anthropic_sdk_api_tests_pass(
    conformance_cache: Path, gateway_factory: Any, tmp_path: Path
) -> None:
    require_anthropic_frontend()
    sdk_version = version("anthropic")
    reqs = [
        *read_requirements("requirements-anthropic-sdk.txt"),
        f"anthropic[aiohttp]=={sdk_version}",
    ]
    bin_dir = tool_venv(conformance_cache, "anthropic-sdk-venv", reqs)
    src = sdist_sources(conformance_cache, "anthropic", sdk_version, (MESSAGES, MODELS))
    models = sdk_model_ids(src)
    assert models, f"found no model ids in the anthropic {sdk_version} test files"

    # Names our catalogue resolves stay as they are; the others (the placeholder `model_id`,
    # the newer `claude-opus-5-5`) are mapped.
    catalogue = default_catalogue()
    unknown = {m for m in models if catalogue.resolve(m) is None}
    gw = gateway_factory(
        api_keys=(ANTHROPIC_CLIENT_KEY,), model_overrides=dict.fromkeys(unknown, KIRO_MODEL)
    )
    junit = tmp_path / "sdk-junit.xml"
    cmd = [bin_dir / "python", "-m", "pytest", "-o", "addopts=", "-p", "no:cacheprovider"]
    cmd += ["-q", "-rfE", f"--junitxml={junit}", MESSAGES, MODELS, "-k", SELECTION]
    proc = run(cmd, cwd=src, env=clean_env(TEST_API_BASE_URL=gw.url), timeout=300)

    result = read_junit(junit)
    report = f"anthropic {sdk_version} API tests vs Ki2API: {result.summary()}\n{tail(proc.stdout)}"
    assert proc.returncode == 0 and result.failed == (), report
    assert result.passed > 0 and result.skipped == 0, report
    ran = ran_per_function(result.cases)
    assert {name: ran[name] for name in EXPECTED} == EXPECTED, report
    assert not upstream_rejections(gw), upstream_rejections(gw)
