"""The openai SDK's own Responses API tests, from its sdist (the version in our lock), vs Ki2API.

`tests/api_resources/test_responses.py` of the sdist, written for a mock server: `create`
(overload 1 plain, overload 2 `stream=True`), `retrieve` and `delete`, each sync and async
(httpx2 and aiohttp transports), loose and strict (pydantic-validated), through the plain,
raw-response and streaming-response wrappers, plus the client-side path checks. They run in a
subprocess from the cached SDK venv (conftest.py) against a gateway on 127.0.0.1 whose upstream
is the Kiro emulator. sdk_responses_plugin.py, loaded into that run, fills the two gaps a mock
server hides (a `create()` with no model and no input; a placeholder id nobody stored): read it.
"""

from __future__ import annotations

import re
from collections import Counter
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.conftest import (
    CLIENT_KEY,
    HERE,
    KIRO_MODEL,
    clean_env,
    read_junit,
    read_requirements,
    run,
    sdist_sources,
    tail,
    tool_venv,
    upstream_rejections,
)

RESPONSES = "tests/api_resources/test_responses.py"

# What runs: create (overload_1 plain, overload_2 stream=True), retrieve (overload_1, plain
# JSON), delete, and the client-side path checks of retrieve and delete, in every flavour.
# Deselected, each for a reason (never silently):
#  - `*_with_all_params*`: placeholder values a mock server takes and OpenAI refuses:
#    `previous_response_id="previous_response_id"` and `conversation="string"` (404 there),
#    `background=True` with `stream=True`, `prompt={"id": "id"}` (no such stored prompt),
#    `max_tool_calls=0`, a function tool whose schema is {"foo": "bar"}, `top_logprobs=0` with
#    `reasoning.effort="none"` ...; and for retrieve `starting_after=0` with `stream=False`.
#  - retrieve overload_2 (`GET /responses/{id}?stream=true`): replays the events of a
#    *background* response; Ki2API runs no background responses (OpenAI refuses the replay of
#    one that was not created with `background=true` too).
#  - cancel: cancels a background response; nothing to cancel here.
#  - compact (`POST /responses/compact`): server-side compaction of a conversation, not served.
SELECTION = (
    "not with_all_params and not retrieve_overload_2 and not cancel and not compact"
    " and (create or retrieve or delete)"
)
FLAVOURS = 5  # sync loose/strict, async loose/strict/aiohttp
EXPECTED = {
    **{
        f"{kind}_{op}": FLAVOURS
        for kind in ("test_method", "test_raw_response", "test_streaming_response")
        for op in ("create_overload_1", "create_overload_2", "retrieve_overload_1", "delete")
    },
    "test_path_params_retrieve_overload_1": FLAVOURS,
    "test_path_params_delete": FLAVOURS,
}


def sdk_model_ids(src: Path) -> set[str]:
    """Every model id the Responses tests name, read from the test file itself."""
    return set(re.findall(r'\bmodel="([^"]+)"', (src / RESPONSES).read_text()))


def ran_per_function(cases: tuple[str, ...]) -> Counter[str]:
    """How many parametrised cases of each test function ran ("cls::test_x[strict]" -> test_x)."""
    return Counter(c.split("::")[-1].split("[")[0] for c in cases)


@pytest.mark.timeout(900)  # the first run on a machine builds the venv and fetches the sdist
def test_openai_sdk_responses_tests_pass(
    conformance_cache: Path, gateway_factory: Any, tmp_path: Path
) -> None:
    sdk_version = version("openai")
    reqs = [*read_requirements("requirements-sdk.txt"), f"openai[aiohttp]=={sdk_version}"]
    bin_dir = tool_venv(conformance_cache, "openai-sdk-venv", reqs)
    src = sdist_sources(conformance_cache, "openai", sdk_version, [RESPONSES])
    models = sdk_model_ids(src)
    assert models, f"found no model ids in the openai {sdk_version} Responses tests"

    gw = gateway_factory(api_keys=(CLIENT_KEY,), model_overrides=dict.fromkeys(models, KIRO_MODEL))
    junit = tmp_path / "sdk-junit.xml"
    cmd = [bin_dir / "python", "-m", "pytest", "-o", "addopts=", "-p", "no:cacheprovider"]
    cmd += ["-p", "sdk_responses_plugin", "-q", "-rfE", f"--junitxml={junit}", RESPONSES]
    cmd += ["-k", SELECTION]
    env = clean_env(
        TEST_API_BASE_URL=f"{gw.url}/v1", PYTHONPATH=str(HERE), KI2API_SDK_MODEL=sorted(models)[0]
    )
    proc = run(cmd, cwd=src, env=env, timeout=300)

    result = read_junit(junit)
    report = f"openai {sdk_version} Responses tests vs Ki2API: {result.summary()}\n"
    report += tail(proc.stdout)
    assert proc.returncode == 0 and result.failed == (), report
    assert result.passed > 0 and result.skipped == 0, report
    ran = ran_per_function(result.cases)
    assert {name: ran[name] for name in EXPECTED} == EXPECTED, report
    assert sum(ran.values()) == sum(EXPECTED.values()), f"unexpected tests ran: {ran}\n{report}"
    assert not upstream_rejections(gw), upstream_rejections(gw)
