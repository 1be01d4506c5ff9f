"""Errors as Kiro words them (issue 10), through the real stack.

A 429 whose body says "Input is too long." is a size error, not a throttle; a real 400 body
(`__type` with the service's namespace, no `x-amzn-errortype`) for images sent to a text-only
model is the client's 400; and 429s that do not lift after several rests mark the account as
likely spent or flagged (in `/health` and `ki2api accounts list`) and rest it for half an hour
instead of trying it again and again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import API_KEY, Gateway
from tests.support.pool_accounts import (
    chat_requests,
    health_of,
    make_pool,
    start_pool_gateway,
    wait_for,
)
from tests.support.procs import run_cli

MODEL = "claude-sonnet-4-20250514"
OPENAI = {"authorization": f"Bearer {API_KEY}"}
ANTHROPIC = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
IMAGE_400 = {
    "__type": "com.amazon.kiro.runtimeservice#ValidationException",
    "message": "Bedrock error message: This model doesn't support the image content block "
    "that you provided. Try again with a model that supports image input.",
    "reason": "IMAGE_FORMAT_UNSUPPORTED",
}


def _post(gw: Gateway, text: str, *, anthropic: bool) -> httpx.Response:
    messages = [{"role": "user", "content": text}]
    if anthropic:
        body: dict[str, Any] = {"model": MODEL, "max_tokens": 50, "messages": messages}
        return httpx.post(f"{gw.url}/v1/messages", json=body, headers=ANTHROPIC, timeout=30)
    body = {"model": MODEL, "messages": messages}
    return httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=OPENAI, timeout=30)


def _emu(**directive: Any) -> str:
    return f"hello<emu>{json.dumps(directive)}</emu>"


@pytest.mark.parametrize("anthropic", [False, True], ids=["openai", "anthropic"])
@pytest.mark.parametrize(
    ("status", "body", "want"),
    [
        # Anthropic's words are Claude Code's compaction trigger
        (429, {"message": "Input is too long."}, ("context_length_exceeded", "prompt is too long")),
        (400, IMAGE_400, ("does not accept images", "does not accept images")),
    ],
    ids=["429-input-too-long", "400-image-unsupported"],
)
def test_request_errors_worded_as_kiro_words_them_are_400s_and_not_retried(
    emulator_url: str,
    tmp_path: Path,
    gateway_factory: Any,
    anthropic: bool,
    status: int,
    body: dict[str, Any],
    want: tuple[str, str],
) -> None:
    members = make_pool(emulator_url, tmp_path, [{}, {}])
    gw = start_pool_gateway(gateway_factory, members, tmp_path)
    r = _post(gw, _emu(error={"status": status, "body": body}), anthropic=anthropic)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert want[anthropic] in json.dumps(error), error
    if anthropic:
        assert r.json()["type"] == "error" and error["type"] == "invalid_request_error"
    assert sum(chat_requests(emulator_url, m) for m in members) == 1  # no other account tried
    assert all(h["reason"] is None for h in health_of(gw).values())  # nobody struck


def test_429s_that_do_not_lift_mark_the_account_and_rest_it_long(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    [stuck] = make_pool(emulator_url, tmp_path, [{"throttled": True}])
    gw = start_pool_gateway(
        gateway_factory, [stuck], tmp_path, throttle_cooldown_s=0.01, pool_wait_s=0.0
    )
    for i in range(12):  # each 429 a new one in the series (sequential requests)
        r = _post(gw, f"try {i}", anthropic=False)
        assert r.status_code == 429, r.text
        state = health_of(gw)[stuck.pool_id]
        if state["reason"] == "throttled_persistently":
            break
        assert state["cooldown_s"] < 60, state  # short rests until then
        assert wait_for(lambda: health_of(gw)[stuck.pool_id]["cooldown_s"] == 0, 5.0)
    else:
        pytest.fail("the account was never marked")
    calls = chat_requests(emulator_url, stuck)
    assert calls == 8, calls  # the 8th 429 in a row marks it (PolicyConfig.stuck_throttles)
    assert state["cooldown_s"] > 1700, state
    assert "likely out of quota or flagged" in state["warning"], state
    r = _post(gw, "again", anthropic=False)
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 1700
    assert chat_requests(emulator_url, stuck) == calls  # not tried while it rests
    listed = run_cli(
        tmp_path / "home",
        tmp_path,
        ["accounts", "list"],
        {
            "KI2API_DATA_DIR": str(gw.settings.data_dir),
            "KIRO_CREDS_DIR": str(gw.settings.kiro_creds_dir),
            "KI2API_ENV_FILE": str(tmp_path / "no.env"),
            "KI2API_QUOTA_POLL_S": "0",
        },
    )
    assert listed.returncode == 0, listed.stderr
    assert "likely out of quota or flagged" in listed.stdout, listed.stdout
