"""`ki2api login` and `ki2api accounts add-key` as real subprocesses with a fake HOME, against
the session emulator (its device flow, social PKCE login and API keys: docs/emulator.md).

The test plays the user: it reads the printed user code and approves it at the emulator, or
plays the browser (GETs the printed login address, follows the redirect to the local callback).
A gateway then serves a chat from what the CLI wrote. No output may hold a token or key.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from ki2api.state.sqlite import SQLiteStore
from tests.conftest import Account
from tests.support.polling import eventually
from tests.support.procs import SCRIPT, clean_env

SCALE = 0.02  # every wait of the device flow shrunk 50 times (the hidden --poll-scale)
CHAT: Any = [{"role": "user", "content": "hello"}]


@pytest.fixture
def device(emulator_url: str) -> Iterator[str]:
    """The emulator's device-flow settings, put back after the test (they are global)."""
    yield emulator_url
    reset = {"interval": 1, "expires_in": 600, "slow_down_polls": 0, "auto_approve_after": None}
    httpx.post(f"{emulator_url}/_emulator/device", json=reset).raise_for_status()
    httpx.post(f"{emulator_url}/_emulator/social", json={"deny": False}).raise_for_status()


def _env(tmp_path: Path, emulator_url: str, **extra: str) -> dict[str, str]:
    (tmp_path / "home").mkdir(exist_ok=True)
    return clean_env(
        tmp_path / "home",
        KI2API_DATA_DIR=str(tmp_path / "data"),
        KIRO_API_BASE=emulator_url,
        KIRO_AUTH_BASE=emulator_url,
        KIRO_OIDC_BASE=emulator_url,
        PYTHONUNBUFFERED="1",
        **extra,
    )


def run(tmp_path: Path, emulator_url: str, *args: str, stdin: str = "", **env: str) -> Any:
    (tmp_path / "cwd").mkdir(exist_ok=True)
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=tmp_path / "cwd",
        env=_env(tmp_path, emulator_url, **env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start(tmp_path: Path, emulator_url: str, *args: str) -> subprocess.Popen[str]:
    (tmp_path / "cwd").mkdir(exist_ok=True)
    return subprocess.Popen(
        [str(SCRIPT), *args],
        cwd=tmp_path / "cwd",
        env=_env(tmp_path, emulator_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until(proc: subprocess.Popen[str], pattern: str) -> tuple[re.Match[str], str]:
    """Read stdout lines until `pattern` matches one; (the match, everything read)."""
    assert proc.stdout is not None
    seen = ""
    for line in proc.stdout:
        seen += line
        found = re.search(pattern, line)
        if found:
            return found, seen
    raise AssertionError(f"{pattern!r} never printed:\n{seen}\n{proc.communicate()[1]}")


def finish(proc: subprocess.Popen[str], seen: str) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=30)
    return proc.returncode, seen + out, err


def authorization(emulator_url: str, user_code: str) -> dict[str, Any] | None:
    view = httpx.get(f"{emulator_url}/_emulator/device").json()
    found = [a for a in view["authorizations"] if a["user_code"] == user_code]
    return found[0] if found else None


def token_file(tmp_path: Path) -> Path:
    return tmp_path / "home" / ".aws" / "sso" / "cache" / "kiro-auth-token.json"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def emulator_account(emulator_url: str, refresh_token: str) -> str:
    accounts = httpx.get(f"{emulator_url}/_emulator/accounts").json()["accounts"]
    ids = [a["id"] for a in accounts if a["token_file"]["refreshToken"] == refresh_token]
    assert len(ids) == 1
    return str(ids[0])


def chats_of(emulator_url: str, account_id: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{emulator_url}/_emulator/requests", params={"limit": 256})
    return [
        q
        for q in r.json()["requests"]
        if q.get("account") == account_id and q["path"].endswith("/generateAssistantResponse")
    ]


def stored(tmp_path: Path) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        store = SQLiteStore.open(tmp_path / "data" / "ki2api.sqlite3")
        try:
            out: dict[str, Any] = {}
            for record in await store.list_accounts():
                tokens = await store.load_tokens(record.id)
                out[record.id] = (record, tokens.data if tokens else None)
            return out
        finally:
            await store.aclose()

    return asyncio.run(read())


def key_account(emulator_url: str) -> tuple[str, str]:
    r = httpx.post(f"{emulator_url}/_emulator/accounts", json={"count": 1, "api_key": True})
    r.raise_for_status()
    acct = r.json()["accounts"][0]
    return acct["id"], acct["api_key"]


# --- accounts add-key ---------------------------------------------------------------------------


def test_add_key_reads_stdin_never_shows_the_key_and_stores_it_0600(
    tmp_path: Path, emulator_url: str
) -> None:
    emu_id, key = key_account(emulator_url)
    done = run(tmp_path, emulator_url, "accounts", "add-key", "--id", "mykey", stdin=key + "\n")
    assert done.returncode == 0, done.stderr
    assert "added mykey" in done.stdout and f"ksk_…{key[-4:]}" in done.stdout
    assert mode(tmp_path / "data" / "ki2api.sqlite3") == 0o600
    record, data = stored(tmp_path)["mykey"]
    assert record.auth_method == "api_key" and data["apiKey"] == key
    table = run(tmp_path, emulator_url, "accounts", "list")
    assert re.search(r"^mykey\s+store\s+api key\s+ok", table.stdout, re.M), table.stdout
    assert "mykey: Kiro API key ksk_…" in table.stdout and "an API key sends none" in table.stdout
    listed = run(tmp_path, emulator_url, "accounts", "list", "--json", "--check-quota")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)[0]["auth_method"] == "api_key"
    refresh = run(tmp_path, emulator_url, "accounts", "refresh", "mykey")
    assert refresh.returncode == 1 and "never refreshed" in refresh.stderr
    again = run(tmp_path, emulator_url, "accounts", "add-key", stdin=key)
    assert again.returncode == 0 and "already in the pool as mykey" in again.stdout
    for out in (done, table, listed, refresh, again):
        assert key not in out.stdout + out.stderr
    quota = [
        q
        for q in httpx.get(f"{emulator_url}/_emulator/requests", params={"limit": 256}).json()[
            "requests"
        ]
        if q.get("account") == emu_id and q["path"].endswith("/getUsageLimits")
    ]
    assert quota and all(q["headers"].get("tokentype") == "API_KEY" for q in quota)


@pytest.mark.parametrize(
    ("stdin", "why"),
    [
        ("", "no API key given"),
        ("sk-live-abcdefghijklmnop\n", "starts with 'ksk_'"),
        ("ksk_ab cd\n", "holds characters"),
    ],
)
def test_add_key_refuses_what_is_not_a_key_without_echoing_it(
    tmp_path: Path, emulator_url: str, stdin: str, why: str
) -> None:
    done = run(tmp_path, emulator_url, "accounts", "add-key", stdin=stdin)
    assert done.returncode == 1 and why in done.stderr
    if stdin.strip():
        assert stdin.strip() not in done.stdout + done.stderr


def test_doctor_checks_a_kiro_api_key(tmp_path: Path, emulator_url: str) -> None:
    _emu_id, key = key_account(emulator_url)
    done = run(tmp_path, emulator_url, "doctor", KIRO_API_KEY=key)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"using KIRO_API_KEY ksk_…{key[-4:]}" in done.stdout and "Kiro answered" in done.stdout
    assert key not in done.stdout + done.stderr
    listed = run(
        tmp_path,
        emulator_url,
        "accounts",
        "list",
        "--json",
        KIRO_API_KEY=key,
        KIRO_API_REGION="eu-central-1",
    )
    (row,) = json.loads(listed.stdout)
    assert (row["id"], row["source"], row["auth_method"]) == ("api-key", "env", "api_key")
    assert row["kiro_region"] == "eu-central-1" and key not in listed.stdout
    bad = run(tmp_path, emulator_url, "doctor", KIRO_API_KEY="sk-other-123456789")
    assert bad.returncode == 1 and "starts with 'ksk_'" in bad.stdout


def test_add_key_takes_no_key_on_the_command_line(tmp_path: Path, emulator_url: str) -> None:
    done = run(tmp_path, emulator_url, "accounts", "add-key", "ksk_secretsecretsecret")
    assert done.returncode == 2  # argparse: no such argument (it would land in shell history)


# --- ki2api login: Builder ID device code -------------------------------------------------------


def test_login_device_flow_writes_the_ide_token_file_and_a_gateway_serves_from_it(
    tmp_path: Path, device: str, gateway_factory: Any
) -> None:
    emulator_url = device
    httpx.post(f"{emulator_url}/_emulator/device", json={"interval": 1, "slow_down_polls": 1})
    proc = start(tmp_path, emulator_url, "login", "--poll-scale", str(SCALE))
    found, seen = read_until(proc, r"confirm the code:\s+([A-Z]{4}-[A-Z]{4})")
    code = found.group(1)
    assert f"user_code={code}" in seen  # the address to open, with the code in it
    eventually(lambda: (authorization(emulator_url, code) or {}).get("polls", 0) >= 3, 20.0)
    httpx.post(f"{emulator_url}/_emulator/device/approve", json={"user_code": code})
    status, out, err = finish(proc, seen)
    assert status == 0, err
    path = token_file(tmp_path)
    data = json.loads(path.read_text())
    assert mode(path) == 0o600
    assert (data["authMethod"], data["provider"], data["region"]) == (
        "IdC",
        "BuilderId",
        "us-east-1",
    )
    companion = path.parent / f"{data['clientIdHash']}.json"
    assert mode(companion) == 0o600 and json.loads(companion.read_text())["clientId"]
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, companion.name])
    for secret in (data["accessToken"], data["refreshToken"]):
        assert secret not in out + err
    # slow_down honoured: after it, every wait is the interval plus 5 s (both scaled)
    polls = authorization(emulator_url, code)["poll_at"]  # type: ignore[index]
    gaps = [b - a for a, b in zip(polls, polls[1:], strict=False)]
    assert gaps and min(gaps) >= (1 + 5) * SCALE * 0.95, gaps
    emu_id = emulator_account(emulator_url, data["refreshToken"])
    gw = gateway_factory(Account(emu_id, path, {}), kiro_creds_file=None)
    answer = gw.openai().chat.completions.create(model="claude-sonnet-4.5", messages=CHAT)
    assert answer.choices[0].message.content
    assert chats_of(emulator_url, emu_id)


def test_login_device_flow_denied_writes_nothing(tmp_path: Path, device: str) -> None:
    proc = start(tmp_path, device, "login", "--poll-scale", str(SCALE))
    found, seen = read_until(proc, r"confirm the code:\s+(\S+)")
    httpx.post(
        f"{device}/_emulator/device/approve", json={"user_code": found.group(1), "deny": True}
    )
    status, _out, err = finish(proc, seen)
    assert status == 1 and "denied" in err
    assert not token_file(tmp_path).exists()


def test_login_store_account_is_taken_in_by_a_running_gateway(
    tmp_path: Path, device: str, gateway_factory: Any
) -> None:
    emulator_url = device
    _emu_key, key = key_account(emulator_url)
    added = run(tmp_path, emulator_url, "accounts", "add-key", "--id", "first", stdin=key)
    assert added.returncode == 0, added.stderr
    gw = gateway_factory(Account("first", tmp_path / "none", {}), kiro_creds_file=None)
    httpx.post(f"{emulator_url}/_emulator/device", json={"auto_approve_after": 1})
    proc = start(tmp_path, emulator_url, "login", "--store", "--id", "bid", "--poll-scale", "0.01")
    _found, seen = read_until(proc, r"confirm the code:")
    status, out, err = finish(proc, seen)
    assert status == 0, err
    assert "account bid (idc) is in the store" in out
    assert not token_file(tmp_path).exists()
    record, data = stored(tmp_path)["bid"]
    assert record.source == "store" and data["clientId"] and data["clientSecret"]
    assert run(tmp_path, emulator_url, "accounts", "disable", "first").returncode == 0
    emu_id = emulator_account(emulator_url, data["refreshToken"])
    answer = gw.openai().chat.completions.create(model="claude-sonnet-4.5", messages=CHAT)
    assert answer.choices[0].message.content
    assert chats_of(emulator_url, emu_id)  # no restart: the gateway re-read the store


def test_a_gateway_started_without_any_login_serves_one_added_later(
    tmp_path: Path, device: str, gateway_factory: Any
) -> None:
    gw = gateway_factory(Account("none", tmp_path / "none", {}), kiro_creds_file=None)
    client = gw.openai()
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="claude-sonnet-4.5", messages=CHAT)
    httpx.post(f"{device}/_emulator/device", json={"auto_approve_after": 0})
    done = run(tmp_path, device, "login", "--store", "--poll-scale", str(SCALE))
    assert done.returncode == 0, done.stderr
    answer = client.chat.completions.create(model="claude-sonnet-4.5", messages=CHAT)
    assert answer.choices[0].message.content


# --- ki2api login google: the local callback ----------------------------------------------------


def test_login_social_through_the_local_callback(
    tmp_path: Path, device: str, gateway_factory: Any
) -> None:
    emulator_url = device
    proc = start(tmp_path, emulator_url, "login", "google")
    found, seen = read_until(proc, r"^\s+(http://\S+/login\?\S+)")
    url = found.group(1)
    assert "code_challenge_method=S256" in url and "idp=Google" in url
    redirect = httpx.get(url, follow_redirects=False)
    assert redirect.status_code == 302
    callback = redirect.headers["location"]
    assert callback.startswith("http://127.0.0.1:")
    stranger = re.sub(r"state=[^&]+", "state=not-this-login", callback)
    assert httpx.get(stranger).status_code == 400  # refused; the login goes on waiting
    page = httpx.get(callback)
    assert page.status_code == 200 and "Signed in" in page.text
    status, out, err = finish(proc, seen)
    assert status == 0, err
    path = token_file(tmp_path)
    data = json.loads(path.read_text())
    assert mode(path) == 0o600
    assert (data["authMethod"], data["provider"]) == ("social", "Google")
    assert data["profileArn"].startswith("arn:aws:codewhisperer:")
    for secret in (data["accessToken"], data["refreshToken"]):
        assert secret not in out + err
    emu_id = emulator_account(emulator_url, data["refreshToken"])
    gw = gateway_factory(Account(emu_id, path, {}), kiro_creds_file=None)
    stream = gw.openai().chat.completions.create(
        model="claude-sonnet-4.5", messages=CHAT, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_login_social_refused_in_the_browser(tmp_path: Path, device: str) -> None:
    httpx.post(f"{device}/_emulator/social", json={"deny": True}).raise_for_status()
    proc = start(tmp_path, device, "login", "github")
    found, seen = read_until(proc, r"^\s+(http://\S+/login\?\S+)")
    redirect = httpx.get(found.group(1), follow_redirects=False)
    assert httpx.get(redirect.headers["location"]).status_code == 400
    status, _out, err = finish(proc, seen)
    assert status == 1 and "access_denied" in err
    assert not token_file(tmp_path).exists()


def test_login_will_not_replace_an_existing_token_file(tmp_path: Path, device: str) -> None:
    path = token_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"accessToken": "theirs"}')
    done = run(tmp_path, device, "login", "--poll-scale", str(SCALE))
    assert done.returncode == 1 and "--force" in done.stderr
    assert "confirm the code" not in done.stdout  # refused before any login began
    assert json.loads(path.read_text()) == {"accessToken": "theirs"}
    assert os.listdir(path.parent) == [path.name]
