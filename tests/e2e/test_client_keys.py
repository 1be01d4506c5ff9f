"""Client keys of the store (`ki2api keys`, issue 15 item 1) through the real HTTP stack.

Keys are made by the real CLI (a subprocess with its own HOME, on the gateway's data directory)
and used with the official SDKs against the emulator: the usage log names the key; rpm, tpm,
daily and monthly budgets, model patterns and expiry are refused in each client's dialect; a
revoke takes effect within a second, also in both workers of `serve --workers 2`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import openai
import pytest

from ki2api.state.client_key_rules import window_of
from ki2api.state.sqlite import SQLiteStore
from tests.conftest import API_KEY, Gateway
from tests.support.polling import until
from tests.support.procs import run_cli

MODEL = "claude-sonnet-4.5"
HI = [{"role": "user", "content": "hi"}]


def keys_cli(gw: Gateway, *args: str) -> dict[str, Any]:
    """`ki2api keys ARGS --json` on the gateway's store; the parsed output."""
    root = gw.settings.data_dir.parent
    home = root / "cli-home"
    home.mkdir(exist_ok=True)
    env = {"KI2API_DATA_DIR": str(gw.settings.data_dir)}
    done = run_cli(home, root, ["keys", *args], env)
    assert done.returncode == 0, done.stderr
    out = done.stdout.strip()
    return json.loads(out) if out.startswith(("{", "[")) else {"text": out}


def create(gw: Gateway, name: str, *limits: str) -> str:
    made = keys_cli(gw, "create", name, *limits, "--json")
    key = str(made["key"])
    assert key.startswith("sk-ki2api-") and made["name"] == name
    return key


def chat_openai(gw: Gateway, key: str, model: str = MODEL) -> Any:
    return gw.openai(api_key=key).chat.completions.create(model=model, messages=HI)  # type: ignore[arg-type]


def chat_anthropic(gw: Gateway, key: str, model: str = MODEL) -> Any:
    client = gw.anthropic(api_key=key)
    return client.messages.create(model=model, max_tokens=50, messages=HI)  # type: ignore[arg-type]


def refused(call: Callable[[], Any], error: type[Exception]) -> Any:
    """The error `call` raises (None when it succeeds)."""
    try:
        call()
    except error as exc:
        return exc
    return None


@pytest.fixture
def gw(gateway: Gateway) -> Gateway:
    return gateway


def test_a_created_key_works_in_both_dialects_and_the_usage_log_names_it(gw: Gateway) -> None:
    key = create(gw, "alice")
    assert chat_openai(gw, key).choices[0].message.content
    assert chat_anthropic(gw, key).content
    chat_openai(gw, API_KEY)  # API_KEY keeps working: its fingerprint stays key-1
    store = SQLiteStore.open(gw.settings.data_dir / "ki2api.sqlite3")
    try:

        async def names() -> list[str]:
            return [r.client_key for r in await store.usage_rows(limit=10)]

        seen = until(lambda: (n := asyncio.run(names())) and len(n) >= 3 and n)
        assert sorted(seen) == ["alice", "alice", "key-1"]
    finally:
        store.close()
    assert key.encode() not in (gw.settings.data_dir / "ki2api.sqlite3").read_bytes()
    listed = keys_cli(gw, "list", "--json")
    assert [k["name"] for k in listed] == ["alice"] and key not in json.dumps(listed)


def test_rpm_over_is_a_429_with_retry_after_in_each_dialect(gw: Gateway) -> None:
    key = create(gw, "rpm-2", "--rpm", "2")
    window = window_of("minute", time.time())
    ok = 0
    for _ in range(6):  # 2 fit in a minute window (4 when a minute starts meanwhile)
        err = refused(lambda: chat_openai(gw, key), openai.RateLimitError)
        if err is not None:
            break
        ok += 1
    assert err is not None, "no 429 after 6 requests"
    if window_of("minute", time.time()) == window:
        assert ok == 2
    assert 1 <= int(err.response.headers["retry-after"]) <= 60
    assert err.code == "rate_limit_exceeded"
    a_err = refused(lambda: chat_anthropic(gw, key), anthropic.RateLimitError)
    assert a_err is not None and a_err.body["error"]["type"] == "rate_limit_error"
    assert 1 <= int(a_err.response.headers["retry-after"]) <= 60


def test_tpm_counts_the_tokens_of_answers(gw: Gateway) -> None:
    key = create(gw, "tpm-1", "--tpm", "1")
    client = gw.anthropic(api_key=key)
    with client.messages.stream(model=MODEL, max_tokens=50, messages=HI) as stream:  # type: ignore[arg-type]
        assert stream.get_final_message().usage.output_tokens  # counted after the answer
    err = until(lambda: refused(lambda: chat_openai(gw, key), openai.RateLimitError))
    assert err is not None and "tokens per minute" in err.message
    assert err.response.headers["retry-after"]


@pytest.mark.parametrize("budget", [("--daily-tokens", "1"), ("--monthly-requests", "1")])
def test_a_spent_budget_is_insufficient_quota_not_to_retry(
    gw: Gateway, budget: tuple[str, str]
) -> None:
    key = create(gw, "budget", *budget)
    chat_anthropic(gw, key)
    err = until(lambda: refused(lambda: chat_openai(gw, key), openai.RateLimitError))
    assert err is not None and err.code == "insufficient_quota"
    assert err.body["type"] == "insufficient_quota"  # type: ignore[index]
    assert err.response.headers["x-should-retry"] == "false"
    a_err = refused(lambda: chat_anthropic(gw, key), anthropic.RateLimitError)
    assert a_err is not None and a_err.response.headers["x-should-retry"] == "false"


def test_a_model_outside_the_patterns_is_a_403_and_not_listed(gw: Gateway) -> None:
    key = create(gw, "haiku-only", "--models", "claude-haiku-*")
    err = refused(lambda: chat_openai(gw, key), openai.PermissionDeniedError)
    assert err is not None and "haiku-only" in err.message
    a_err = refused(lambda: chat_anthropic(gw, key), anthropic.PermissionDeniedError)
    assert a_err is not None and a_err.body["error"]["type"] == "permission_error"
    assert chat_openai(gw, key, "claude-haiku-4.5").choices
    every = [m.id for m in gw.openai().models.list()]  # API_KEY: every model, as before
    assert "claude-sonnet-4-5" in every and "claude-haiku-4-5" in every
    assert [m.id for m in gw.openai(api_key=create(gw, "any-model")).models.list()] == every
    listed = [m.id for m in gw.openai(api_key=key).models.list()]
    assert listed == [m for m in every if m.startswith("claude-haiku-")] and listed
    assert [m.id for m in gw.anthropic(api_key=key).models.list()] == listed
    assert gw.openai(api_key=key).models.retrieve("claude-haiku-4-5").id == "claude-haiku-4-5"
    gone = refused(lambda: gw.openai(api_key=key).models.retrieve(MODEL), openai.NotFoundError)
    assert gone is not None and gone.code == "model_not_found" and "Closest" not in gone.message
    a_gone = refused(
        lambda: gw.anthropic(api_key=key).models.retrieve(MODEL), anthropic.NotFoundError
    )
    assert a_gone is not None and a_gone.body["error"]["type"] == "not_found_error"
    assert gw.openai().models.retrieve(MODEL).id == MODEL


def usage_of(gw: Gateway, name: str) -> list[Any]:
    """The usage rows naming the key `name`, in the order their requests started."""
    store = SQLiteStore.open(gw.settings.data_dir / "ki2api.sqlite3")
    try:
        rows = asyncio.run(store.usage_rows(limit=100))
    finally:
        store.close()
    return sorted((r for r in rows if r.client_key == name), key=lambda r: r.at)


def test_the_responses_api_writes_usage_rows_and_spends_the_key(gw: Gateway) -> None:
    """One row per `/v1/responses` request (answered, streamed, failed, abandoned), whose
    tokens count against the key's tpm and daily budget like a chat's."""
    for name, limit in (("resp-tpm", "--tpm"), ("resp-daily", "--daily-tokens")):
        client = gw.openai(api_key=create(gw, name, limit, "1"))
        assert client.responses.create(model=MODEL, input="hi").usage
        err = until(
            lambda c=client: refused(  # type: ignore[misc]
                lambda: c.responses.create(model=MODEL, input="hi"), openai.RateLimitError
            )
        )
        assert err is not None, name
        assert (
            ("tokens per minute" in err.message)
            if limit == "--tpm"
            else (err.code == "insufficient_quota")
        )
    key = create(gw, "responder")
    client = gw.openai(api_key=key)
    answered = client.responses.create(model=MODEL, input="hi")
    with client.responses.stream(model=MODEL, input="hello") as stream:
        streamed = stream.get_final_response()
    cut = (
        "hi <emu>"
        + json.dumps({"text": "a b c d e f", "chunks": 6, "truncate_after_events": 3})
        + "</emu>"
    )
    with pytest.raises((RuntimeError, openai.APIError)):  # a 502, or a response.failed event
        with client.responses.stream(model=MODEL, input=cut) as stream:
            stream.get_final_response()
    slow = "hi <emu>" + json.dumps({"first_delay_ms": 3000}) + "</emu>"
    with pytest.raises(httpx.ReadTimeout):  # the client leaves before the first byte
        httpx.post(
            f"{gw.url}/v1/responses",
            json={"model": MODEL, "input": slow, "stream": True},
            headers={"authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(5, read=0.3),
        )
    rows = until(lambda: len(r := usage_of(gw, "responder")) >= 4 and r)
    assert rows and len(rows) == 4, rows
    assert {(r.endpoint, r.model) for r in rows} == {("/v1/responses", MODEL)}
    assert [r.stream for r in rows] == [False, True, True, True]
    assert [r.outcome for r in rows[:2]] == ["ok", "ok"]
    assert rows[2].outcome not in ("ok", "cancelled") and rows[3].outcome == "cancelled"
    for row, resp in zip(rows, (answered, streamed), strict=False):
        assert resp.usage is not None and row.account_id and row.attempts == 1
        assert (row.input_tokens, row.output_tokens) == (
            resp.usage.input_tokens,
            resp.usage.output_tokens,
        )
    root = gw.settings.data_dir.parent
    env = {"KI2API_DATA_DIR": str(gw.settings.data_dir)}
    done = run_cli(root / "cli-home", root, ["usage", "--by", "key", "--json"], env)
    assert done.returncode == 0, done.stderr
    mine = [g for g in json.loads(done.stdout) if g["group"] == "responder"]
    assert mine and mine[0]["requests"] == 4 and mine[0]["ok"] == 2
    assert mine[0]["input_tokens"] == sum(r.input_tokens or 0 for r in rows) > 0


def test_an_expired_a_wrong_or_a_disabled_key_is_a_401_not_to_retry(gw: Gateway) -> None:
    expired = create(gw, "old", "--expires", "2000-01-01")
    wrong = "sk-ki2api-" + "A" * 43
    for key in (expired, wrong):
        err = refused(lambda k=key: chat_openai(gw, k), openai.AuthenticationError)  # type: ignore[misc]
        assert err is not None and err.response.headers["x-should-retry"] == "false"
        a_err = refused(lambda k=key: chat_anthropic(gw, k), anthropic.AuthenticationError)  # type: ignore[misc]
        assert a_err is not None and a_err.response.headers["x-should-retry"] == "false"
        assert key not in err.message and key not in str(a_err.body)
    key = create(gw, "paused")
    chat_openai(gw, key)
    keys_cli(gw, "disable", "paused")
    assert refused(lambda: chat_openai(gw, key), openai.AuthenticationError)
    keys_cli(gw, "enable", "paused")
    assert chat_openai(gw, key).choices


def test_a_revoke_takes_effect_within_a_second(gw: Gateway) -> None:
    key = create(gw, "soon-gone")
    models = httpx.get(f"{gw.url}/v1/models", headers={"authorization": f"Bearer {key}"})
    assert models.status_code == 200  # cached by the worker now
    keys_cli(gw, "revoke", "soon-gone")
    revoked_at = time.monotonic()
    assert refused(lambda: chat_openai(gw, key), openai.AuthenticationError)

    def listing_refused() -> bool:
        r = httpx.get(f"{gw.url}/v1/models", headers={"authorization": f"Bearer {key}"})
        return r.status_code == 401

    assert until(listing_refused, timeout=1.0)
    assert time.monotonic() - revoked_at < 1.0


def test_rotate_replaces_the_secret(gw: Gateway) -> None:
    old = create(gw, "rotating")
    new = str(keys_cli(gw, "rotate", "rotating", "--json")["key"])
    assert new != old and chat_openai(gw, new).choices
    assert refused(lambda: chat_openai(gw, old), openai.AuthenticationError)


def test_the_cli_refuses_what_it_cannot_do(gw: Gateway) -> None:
    root = gw.settings.data_dir.parent
    env = {"KI2API_DATA_DIR": str(gw.settings.data_dir)}
    home = root / "cli-home"
    home.mkdir(exist_ok=True)
    create(gw, "taken")
    keys_cli(gw, "revoke", "taken")
    for args, words in [
        (["create", "taken"], "exists already"),
        (["create", "key-2"], "reserved"),
        (["create", "bad name"], "a key name is"),
        (["enable", "taken"], "revoked for good"),
        (["rotate", "taken"], "revoked"),
        (["show", "nobody"], "no key named"),
    ]:
        done = run_cli(home, root, ["keys", *args], env)
        assert done.returncode == 1 and words in done.stderr, (args, done.stderr)
    done = run_cli(home, root, ["keys", "create", "x", "--expires", "soon"], env)
    assert done.returncode == 2 and "not a date" in done.stderr
