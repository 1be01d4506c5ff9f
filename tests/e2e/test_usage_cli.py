"""`ki2api usage` over the usage log a running gateway wrote (real HTTP, real store, the CLI as
a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import API_KEY, Gateway

SCRIPT = Path(sys.executable).with_name("ki2api")
MODEL = "claude-sonnet-4-20250514"


def _usage(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIRO_", "KI2API_"))}
    env.update(KI2API_DATA_DIR=str(gw.settings.data_dir), KI2API_ENV_FILE="/nonexistent.env")
    return subprocess.run(
        [str(SCRIPT), "usage", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _rows(gw: Gateway, by: str) -> list[dict[str, Any]]:
    done = _usage(gw, "--by", by, "--json")
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def test_usage_sums_what_the_gateway_logged(gateway: Gateway) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "count me"}]}
    for _ in range(3):
        ok = httpx.post(
            f"{gateway.url}/v1/chat/completions", json=body, headers={"x-api-key": API_KEY}
        )
        assert ok.status_code == 200
    bad = httpx.post(f"{gateway.url}/v1/messages", json=body, headers={"x-api-key": "wrong"})
    assert bad.status_code == 401
    deadline = time.monotonic() + 10  # rows are written in batches a fraction of a second apart
    while sum(r["requests"] for r in _rows(gateway, "account")) < 4:
        assert time.monotonic() < deadline, _rows(gateway, "account")
        time.sleep(0.1)
    by_account = {r["group"]: r for r in _rows(gateway, "account")}
    assert by_account["default"]["requests"] == 3 and by_account["default"]["ok"] == 3
    assert by_account["default"]["output_tokens"] > 0
    assert by_account[None]["requests"] == 1  # refused before any account was tried
    by_key = {r["group"]: r["requests"] for r in _rows(gateway, "key")}
    assert by_key["key-1"] == 3
    assert [k for k in by_key if k.startswith("invalid:")] and "wrong" not in json.dumps(by_key)
    outcomes = {r["group"]: r["requests"] for r in _rows(gateway, "outcome")}
    assert outcomes == {"ok": 3, "authentication": 1}
    text = _usage(gateway, "--by", "model")
    assert text.returncode == 0 and MODEL in text.stdout and "total" in text.stdout
    assert API_KEY not in text.stdout


def test_usage_without_a_store_says_nothing_was_logged(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIRO_", "KI2API_"))}
    env.update(KI2API_DATA_DIR=str(tmp_path / "empty"), KI2API_ENV_FILE="/nonexistent.env")
    done = subprocess.run(
        [str(SCRIPT), "usage"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and "no requests in the last 24 h" in done.stdout
    bad = subprocess.run(
        [str(SCRIPT), "usage", "--hours", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and "--hours" in bad.stderr
