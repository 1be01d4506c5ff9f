"""Signs of trouble acted on (issue 13, part C), through the real stack: the official SDKs ->
the gateway under uvicorn -> the emulator, whose accounts produce each sign (docs/emulator.md:
`suspicious`, `credit_window`, `user_rate`, `location_blocked`, `suspended`).

Each sign rests its account as docs/accounts.md ("Trouble signs") says, seen in `/health` and
`ki2api accounts list`; the client of the failing request gets another account's answer, or a
clear error in its dialect when no account can serve.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import API_KEY, Gateway
from tests.support.pool_accounts import (
    Member,
    chat_requests,
    emulator_counters,
    health_of,
    make_pool,
    patch_behaviour,
    requests_of,
    start_pool_gateway,
)
from tests.support.procs import run_cli

CLAUDE = "claude-sonnet-4.5"
OTHER_CLAUDE = "claude-haiku-4.5"
NOT_CLAUDE = "deepseek-3.2"


def ask_openai(gw: Gateway, text: str, model: str = CLAUDE) -> str:
    reply = gw.openai().chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}]
    )
    return reply.choices[0].message.content or ""


def ask_anthropic(gw: Gateway, text: str, model: str = CLAUDE) -> str:
    msg = gw.anthropic().messages.create(
        model=model, max_tokens=100, messages=[{"role": "user", "content": text}]
    )
    return "".join(b.text for b in msg.content if b.type == "text")


def health(gw: Gateway) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{gw.url}/health", headers={"x-api-key": API_KEY}).json()
    return body


def listed(gw: Gateway, tmp_path: Path, *, table: bool = False) -> Any:
    """`ki2api accounts list` (`--json` unless `table`) on the gateway's store."""
    done = run_cli(
        tmp_path / "home",
        tmp_path,
        ["accounts", "list", *([] if table else ["--json"])],
        {
            "KI2API_DATA_DIR": str(gw.settings.data_dir),
            "KIRO_CREDS_DIR": str(gw.settings.kiro_creds_dir),
            "KI2API_ENV_FILE": str(tmp_path / "no.env"),
            "KI2API_QUOTA_POLL_S": "0",
        },
    )
    assert done.returncode == 0, done.stderr
    return done.stdout if table else {r["id"]: r for r in json.loads(done.stdout)}


def _warnings(caplog: pytest.LogCaptureFixture, account: str, words: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
        and f"account {account}:" in r.getMessage()
        and words in r.getMessage()
    ]


# 1. suspicious activity -------------------------------------------------------------------------


def test_suspicious_activity_rests_the_account_long_and_warns(
    emulator_url: str, tmp_path: Path, gateway_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    flagged, healthy = make_pool(emulator_url, tmp_path, [{"suspicious": True}, {}])
    gw = start_pool_gateway(gateway_factory, [flagged, healthy], tmp_path)
    assert "warning" not in health(gw)  # no top-level signal while all is well
    assert ask_openai(gw, "first") == "Echo: first"  # p0 (the tie-break) said 429: p1 answered
    assert chat_requests(emulator_url, flagged) == 1
    assert emulator_counters(emulator_url, healthy)["served"] == 1

    body = health(gw)
    seen = {a["id"]: a for a in body["pool"]}[flagged.pool_id]
    assert seen["reason"] == "suspicious_activity"
    assert 1790 < seen["cooldown_s"] <= 1800, seen  # KI2API_SUSPICIOUS_REST_S, default
    assert seen["warnings"] == ["suspicious_activity"]
    assert "suspicious activity" in seen["warning"]
    assert {a["id"]: a for a in body["pool"]}[healthy.pool_id]["warning"] is None
    assert body["accounts"]["warned"] == 1 and "1 account(s)" in body["warning"]
    public = httpx.get(f"{gw.url}/health").json()  # the signal without a key, no details
    assert public["accounts"]["warned"] == 1 and "pool" not in public

    for n in range(3):  # it is not tried again while it rests, and nothing is logged again
        assert ask_anthropic(gw, f"more {n}") == f"Echo: more {n}"
    assert chat_requests(emulator_url, flagged) == 1
    logged = _warnings(caplog, flagged.pool_id, "suspicious activity")
    assert len(logged) == 1, logged  # once per event
    assert "resting 1800 s" in logged[0] and "Bearer" not in logged[0]

    rows = listed(gw, tmp_path)
    assert rows[flagged.pool_id]["warnings"] == ["suspicious_activity"]
    assert rows[flagged.pool_id]["cooldown_reason"] == "suspicious_activity"
    table = listed(gw, tmp_path, table=True)
    assert f"{flagged.pool_id}: WARNING: Kiro reported suspicious activity" in table


def test_when_every_account_is_flagged_the_client_gets_a_429_in_its_dialect(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    members = make_pool(emulator_url, tmp_path, [{"suspicious": True}, {"suspicious": True}])
    gw = start_pool_gateway(gateway_factory, members, tmp_path, suspicious_rest_s=600.0)
    with pytest.raises(anthropic.RateLimitError) as an:
        ask_anthropic(gw, "hello")
    assert 590 <= int(an.value.response.headers["retry-after"]) <= 600
    assert "suspicious_activity" in an.value.message
    with pytest.raises(openai.RateLimitError) as oa:
        ask_openai(gw, "hello")
    assert 590 <= int(oa.value.response.headers["retry-after"]) <= 600
    assert all(chat_requests(emulator_url, m) == 1 for m in members)  # neither tried again
    assert all(h["warnings"] == ["suspicious_activity"] for h in health_of(gw).values())


# 2. the credit window and the per-user rate -------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "settings", "reason", "rest"),
    [
        ({"credit_window": True, "retry_after_s": 7}, {}, "credit_window", 7.0),
        ({"credit_window": True}, {"credit_window_s": 42.0}, "credit_window", 42.0),
        ({"user_rate": True, "retry_after_s": 3}, {}, "user_rate", 3.0),
        ({"user_rate": True}, {"user_rate_rest_s": 33.0}, "user_rate", 33.0),
    ],
    ids=["credit-retry-after", "credit-no-retry-after", "user-retry-after", "user-no-retry-after"],
)
def test_a_rate_window_rests_the_account_until_it_ends(
    emulator_url: str,
    tmp_path: Path,
    gateway_factory: Any,
    behaviour: dict[str, Any],
    settings: dict[str, Any],
    reason: str,
    rest: float,
) -> None:
    limited, healthy = make_pool(emulator_url, tmp_path, [behaviour, {}])
    gw = start_pool_gateway(gateway_factory, [limited, healthy], tmp_path, **settings)
    assert ask_anthropic(gw, "window?") == "Echo: window?"
    seen = health_of(gw)[limited.pool_id]
    assert seen["reason"] == reason, seen
    assert rest - 5 < seen["cooldown_s"] <= rest, seen
    assert seen["warning"] is None  # a window is no sign of trouble with the account
    assert listed(gw, tmp_path)[limited.pool_id]["cooldown_reason"] == reason


@pytest.mark.parametrize("sign", ["credit_window", "user_rate"])
def test_rate_windows_are_not_throttle_strikes(
    emulator_url: str, tmp_path: Path, gateway_factory: Any, sign: str
) -> None:
    """Ten windows in a row on a lone account: each is a short rest of its own, never the
    `throttled_persistently` half hour that eight plain 429s in a row earn. (Each request
    waits out the previous window: KI2API_POOL_WAIT_S is longer than the window.)"""
    [limited] = make_pool(emulator_url, tmp_path, [{sign: True}])
    gw = start_pool_gateway(
        gateway_factory,
        [limited],
        tmp_path,
        pool_wait_s=2.0,
        credit_window_s=0.05,
        user_rate_rest_s=0.05,
    )
    for n in range(10):
        with pytest.raises(openai.RateLimitError):
            ask_openai(gw, f"try {n}")
        assert chat_requests(emulator_url, limited) == n + 1
    seen = health_of(gw)[limited.pool_id]
    assert seen["reason"] == sign and seen["cooldown_s"] < 1, seen
    patch_behaviour(emulator_url, limited.emu_id, **{sign: False})
    assert ask_openai(gw, "after") == "Echo: after"


# 3. a location-style block -------------------------------------------------------------------


def test_a_location_block_fails_over_and_rests_the_account_for_claude_only(
    emulator_url: str, tmp_path: Path, gateway_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    blocked, fine = make_pool(emulator_url, tmp_path, [{"location_blocked": True}, {}])
    gw = start_pool_gateway(gateway_factory, [blocked, fine], tmp_path, location_rest_s=900.0)
    assert ask_anthropic(gw, "claude?") == "Echo: claude?"  # p0 refused it, p1 answered
    [refused] = requests_of(emulator_url, [blocked])
    assert refused["fault"] == "location_blocked"

    seen = health_of(gw)[blocked.pool_id]
    assert seen["warnings"] == ["location_block"]
    assert "likely location block" in seen["warning"]
    assert "outside the blocked region" in seen["warning"]
    assert seen["cooldown_s"] == 0 and seen["enabled"]  # no plain rest: other models still go
    assert health(gw)["accounts"]["warned"] == 1

    assert ask_openai(gw, "other model", model=NOT_CLAUDE) == "Echo: other model"
    assert emulator_counters(emulator_url, blocked)["served"] == 1  # served by the blocked one
    for n in range(2):  # Claude goes elsewhere, for any Claude model
        assert ask_openai(gw, f"claude {n}", model=OTHER_CLAUDE) == f"Echo: claude {n}"
    assert chat_requests(emulator_url, blocked) == 2  # the refusal and the other model only
    assert emulator_counters(emulator_url, fine)["served"] == 3

    logged = _warnings(caplog, blocked.pool_id, "likely location block")
    assert len(logged) == 1, logged
    row = listed(gw, tmp_path)[blocked.pool_id]
    assert row["warnings"] == ["location_block"]
    assert f"{blocked.pool_id}: WARNING: likely location block" in listed(gw, tmp_path, table=True)


def _assert_location_message(message: str) -> None:
    assert "likely a location block" in message, message
    assert "proxy or network outside the blocked region" in message, message


def test_a_location_block_everywhere_is_a_clear_error_in_each_dialect(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    [blocked] = make_pool(emulator_url, tmp_path, [{"location_blocked": True}])
    gw = start_pool_gateway(gateway_factory, [blocked], tmp_path)
    with pytest.raises(anthropic.PermissionDeniedError) as an:  # the refusal itself
        ask_anthropic(gw, "hi")
    _assert_location_message(an.value.message)
    with pytest.raises(openai.PermissionDeniedError) as oa:  # the account rests from Claude
        ask_openai(gw, "hi", model=OTHER_CLAUDE)
    _assert_location_message(oa.value.message)
    assert oa.value.code == "location_block"
    assert chat_requests(emulator_url, blocked) == 1
    assert ask_anthropic(gw, "not claude", model=NOT_CLAUDE) == "Echo: not claude"


def test_an_unknown_model_is_still_an_unknown_model(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    """A Claude model the account's list does not offer is no location block."""
    [narrow] = make_pool(emulator_url, tmp_path, [{"models": ["claude-sonnet-4.5", "auto"]}])
    gw = start_pool_gateway(gateway_factory, [narrow], tmp_path)
    with pytest.raises(openai.NotFoundError):
        ask_openai(gw, "hi", model="claude-opus-4.5")
    assert health_of(gw)[narrow.pool_id]["warnings"] == []


# 4. a suspension, with the shape of the requests before it -----------------------------------


def _restarted(gateway_factory: Any, members: list[Member], tmp_path: Path) -> Gateway:
    return start_pool_gateway(gateway_factory, members, tmp_path)


def test_a_suspension_shows_the_last_requests_shape_after_a_restart(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    [acct] = make_pool(emulator_url, tmp_path, [{}])
    gw = start_pool_gateway(gateway_factory, [acct], tmp_path)
    texts = ["a" * 10, "b" * 2000, "c" * 30_000]
    ask_openai(gw, texts[0])
    ask_anthropic(gw, texts[1], model=OTHER_CLAUDE)
    ask_openai(gw, texts[2], model=NOT_CLAUDE)
    patch_behaviour(emulator_url, acct.emu_id, suspended=True)
    with pytest.raises(anthropic.PermissionDeniedError):
        ask_anthropic(gw, "and now?")
    sent = requests_of(emulator_url, [acct])
    assert len(sent) == 4

    def check(suspension: dict[str, Any]) -> None:
        recent = suspension["recent"]
        assert [r["model"] for r in recent] == [CLAUDE, OTHER_CLAUDE, NOT_CLAUDE, CLAUDE]
        assert [r["bytes"] for r in recent] == [q["body_bytes"] for q in sent]
        assert all(r["inflight"] == 1 for r in recent)  # one at a time
        assert [r["at"] for r in recent] == sorted(r["at"] for r in recent)
        assert recent[-1]["at"] <= suspension["at"] <= time.time()
        assert not any(t in json.dumps(suspension) for t in texts)  # never the content

    seen = health_of(gw)[acct.pool_id]
    assert seen["disabled_reason"] == "suspended"
    check(seen["suspension"])
    gw.close_clients()

    again = _restarted(gateway_factory, [acct], tmp_path)  # a new gateway on the same store
    check(health_of(again)[acct.pool_id]["suspension"])
    row = listed(again, tmp_path)[acct.pool_id]
    check(row["suspension"])
    table = listed(again, tmp_path, table=True)
    assert f"{acct.pool_id}: suspended at " in table
    assert f"{NOT_CLAUDE} {sent[2]['body_bytes']} B, 1 in flight" in table
