"""Safe defaults on a network, through the real stack: the Host check of a loopback-bound
gateway, what /health tells a stranger, 401s that say "do not retry", one client-key parser
for authentication and the usage log, and the refusal to serve the default key to a network."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import API_KEY, Gateway, make_account
from tests.e2e.test_cli import DEFAULT_KEY, Sandbox, emulator_env, get_ok, listening, running
from tests.e2e.test_connections import usage_rows
from tests.support.servers import free_port

MODEL = "claude-sonnet-4-20250514"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {**CHAT, "max_tokens": 50}
ANTHROPIC = {"anthropic-version": "2023-06-01"}


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    return Sandbox(home.resolve(), cwd.resolve())


# Host check (DNS rebinding) --------------------------------------------------------------------


def test_a_foreign_host_is_refused_in_each_dialect(gateway: Gateway) -> None:
    bearer = {"authorization": f"Bearer {API_KEY}", "host": "evil.example:8989"}
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=bearer)
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert (
        set(err) == {"message", "type", "param", "code"}
        and "KI2API_ALLOWED_HOSTS" in (err["message"])
    )
    x_key = {"x-api-key": API_KEY, "host": "evil.example", **ANTHROPIC}
    r = httpx.post(f"{gateway.url}/v1/messages", json=MESSAGES, headers=x_key)
    assert r.status_code == 403, r.text
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "permission_error"
    assert r.headers["request-id"]
    r = httpx.get(f"{gateway.url}/health", headers={"host": "evil.example"})
    assert r.status_code == 403


@pytest.mark.parametrize("host", ["localhost:1234", "127.0.0.1", "[::1]:8989", "LOCALHOST"])
def test_loopback_hosts_are_served(gateway: Gateway, host: str) -> None:
    r = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=CHAT,
        headers={"authorization": f"Bearer {API_KEY}", "host": host},
    )
    assert r.status_code == 200, r.text


def test_an_allowed_proxy_name_is_served(gateway_factory: Any) -> None:
    gw: Gateway = gateway_factory(allowed_hosts=("proxy.example",))
    ok = httpx.get(f"{gw.url}/health", headers={"host": "proxy.example:443"})
    assert ok.status_code == 200
    assert httpx.get(f"{gw.url}/health", headers={"host": "other.example"}).status_code == 403


def test_a_non_loopback_bind_does_not_check_host(gateway_factory: Any) -> None:
    # Served on 127.0.0.1 by the test helper, but configured as if bound to every interface.
    gw: Gateway = gateway_factory(host="0.0.0.0")
    assert httpx.get(f"{gw.url}/health", headers={"host": "gw.example"}).status_code == 200


# /health and HEAD --------------------------------------------------------------------------------


def test_health_tells_a_stranger_only_the_status(gateway: Gateway) -> None:
    public = httpx.get(f"{gateway.url}/health").json()
    assert set(public) == {"status", "version", "accounts"}, public
    detailed = httpx.get(f"{gateway.url}/health", headers={"x-api-key": API_KEY}).json()
    assert detailed["upstream"] == gateway.emulator_url and isinstance(detailed["pid"], int)
    assert "pool" in detailed and "problem" in detailed
    wrong = httpx.get(f"{gateway.url}/health", headers={"x-api-key": "wrong"}).json()
    assert set(wrong) == set(public)


def test_head_requests(gateway: Gateway) -> None:
    head = httpx.head(f"{gateway.url}/health")
    assert head.status_code == 200 and head.content == b""
    assert httpx.head(f"{gateway.url}/v1/models").status_code == 401  # same rule as GET
    auth = {"authorization": f"Bearer {API_KEY}"}
    models = httpx.head(f"{gateway.url}/v1/models", headers=auth)
    assert models.status_code == 200 and models.content == b""
    assert httpx.head(f"{gateway.url}/v1/models/{MODEL}", headers=auth).status_code == 200
    assert httpx.head(f"{gateway.url}/nothing-here").status_code == 404  # an unknown path
    assert httpx.head(f"{gateway.url}/").status_code == 200  # the console's (off) page, as GET


# 401 and the key parser ------------------------------------------------------------------------


def test_a_wrong_key_says_do_not_retry_in_both_dialects(gateway: Gateway) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}):
        r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=headers)
        assert r.status_code == 401 and r.headers["x-should-retry"] == "false"
    for headers in ({}, {"x-api-key": "wrong"}):
        r = httpx.post(f"{gateway.url}/v1/messages", json=MESSAGES, headers=headers | ANTHROPIC)
        assert r.status_code == 401 and r.headers["x-should-retry"] == "false"
        assert r.json()["error"]["type"] == "authentication_error"
    # The SDKs obey it: one attempt, even with retries allowed.
    started = time.monotonic()
    with pytest.raises(openai.AuthenticationError):
        gateway.openai(api_key="wrong", max_retries=3).models.list()
    with pytest.raises(anthropic.AuthenticationError):
        gateway.anthropic(api_key="wrong", max_retries=3).models.list()
    assert time.monotonic() - started < 2.0  # a retry would back off 0.5 s+ each


def test_one_key_parser_serves_and_logs_the_valid_key(gateway: Gateway) -> None:
    url = f"{gateway.url}/v1/chat/completions"
    cases = [
        ({"authorization": f"Bearer {API_KEY}", "x-api-key": "junk"}, 200),
        ({"authorization": "Bearer junk", "x-api-key": API_KEY}, 200),
        ({"authorization": "Bearer junk", "x-api-key": "junk2"}, 401),
    ]
    for headers, status in cases:
        assert httpx.post(url, json=CHAT, headers=headers).status_code == status
    deadline = time.monotonic() + 10
    while len(rows := usage_rows(gateway)) < len(cases) and time.monotonic() < deadline:
        time.sleep(0.1)
    logged = sorted((r.client_key, r.outcome) for r in rows)
    assert logged == sorted(
        [("key-1", "ok"), ("key-1", "ok"), (rows_invalid(logged), "authentication")]
    ), logged
    assert all("junk" not in r.client_key for r in rows)


def rows_invalid(logged: list[tuple[str, str]]) -> str:
    invalid = [k for k, _ in logged if k.startswith("invalid:")]
    assert len(invalid) == 1, logged
    return invalid[0]


# Start-up: the default key on a network ----------------------------------------------------------


def test_serve_refuses_the_default_key_on_all_interfaces(sandbox: Sandbox) -> None:
    port = free_port()
    result = sandbox.run("serve", "--host", "0.0.0.0", "--port", str(port))
    assert result.returncode == 2
    assert "default API key" in result.stderr and "KI2API_ALLOW_DEFAULT_KEY" in result.stderr
    assert "API_KEY" in result.stderr and "Traceback" not in result.stderr
    assert not listening(port)


@pytest.mark.parametrize(
    "env", [{"KI2API_ALLOW_DEFAULT_KEY": "1"}, {"API_KEY": "my-own-secret"}], ids=["allow", "own"]
)
def test_serve_on_all_interfaces_goes_on_with_an_own_key_or_the_flag(
    sandbox: Sandbox, env: dict[str, str]
) -> None:
    result = sandbox.run("serve", "--host", "0.0.0.0", "--port", str(free_port()), **env)
    # No login in the sandbox: it stops at the next check, not at the key.
    assert result.returncode == 2 and "no Kiro login found" in result.stderr
    assert "KI2API_ALLOW_DEFAULT_KEY=1 if" not in result.stderr


def test_a_non_ascii_key_is_a_configuration_error(sandbox: Sandbox) -> None:
    result = sandbox.run("serve", "--port", str(free_port()), API_KEY="clé-secrète")
    assert result.returncode == 2
    assert "configuration error" in result.stderr and "API_KEY" in result.stderr
    assert "clé-secrète" not in result.stderr and "Traceback" not in result.stderr


def test_serve_on_loopback_with_the_default_key_still_starts(
    sandbox: Sandbox, emulator_url: str
) -> None:
    account = make_account(emulator_url, sandbox.home.parent / "login")
    port = free_port()
    with running(sandbox, "serve", "--port", str(port), **emulator_env(emulator_url, account)) as p:
        base = f"http://127.0.0.1:{port}"
        p.wait_for("/health", lambda: get_ok(f"{base}/health"))
        auth = {"authorization": f"Bearer {DEFAULT_KEY}"}
        assert httpx.get(f"{base}/v1/models", headers=auth).status_code == 200


def test_demo_on_all_interfaces_warns_loudly(sandbox: Sandbox) -> None:
    port = free_port()
    with running(sandbox, "demo", "--host", "0.0.0.0", "--port", str(port)) as proc:
        proc.wait_for("/health", lambda: get_ok(f"http://127.0.0.1:{port}/health"))
        assert "WARNING" in proc.err.read_text() and "default" in proc.err.read_text()
