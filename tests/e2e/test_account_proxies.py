"""Issue 13 part B end to end: each account's calls leave through its own outbound proxy.

Official SDK -> the gateway -> a small test proxy (tests/support/proxies.py, each connecting out
from its own loopback address) -> the Kiro emulator, whose request log names the address each
request came from. A dead proxy rests its account and the request fails over.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import socket
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from ki2api.cli.accounts_commands import add_accounts_parser, run_accounts
from ki2api.kiro.accounts.registry import store_path, sync_discovered
from ki2api.settings import Settings
from ki2api.state.sqlite import SQLiteStore
from tests.conftest import Gateway, gateway_settings
from tests.support.pool_accounts import Member, health_of, make_pool, wait_for
from tests.support.proxies import http_proxy, https_proxy, socks5_proxy

MODEL = "claude-sonnet-4-20250514"


def _settings(emulator_url: str, members: list[Member], where: Path, **kw: Any) -> Settings:
    return gateway_settings(
        emulator_url, members[0].account, where, kiro_creds_dir=where / "creds",
        kiro_creds_file=None, **kw,
    )  # fmt: skip


def _give_proxies(settings: Settings, proxies: Mapping[str, str | None]) -> None:
    """Register the discovered pool in the gateway's store and give accounts their proxies."""

    async def run() -> None:
        store = SQLiteStore.open(store_path(settings))
        try:
            await sync_discovered(settings, store)
            for record in await store.list_accounts():
                if record.id in proxies:
                    await store.upsert_account(
                        dataclasses.replace(record, proxy=proxies[record.id])
                    )
        finally:
            await store.aclose()

    asyncio.run(run())


def _accounts_cli(settings: Settings, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_accounts_parser(parser.add_subparsers(dest="command"))
    return run_accounts(settings, parser.parse_args(["accounts", *argv]))


def _ask(gw: Gateway, text: str) -> str:
    reply = gw.openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}]
    )
    return reply.choices[0].message.content or ""


def requests_of(emulator_url: str, members: list[Member]) -> list[dict[str, Any]]:
    """Every logged call of these accounts (chat, refresh, models, quota, ...), oldest first."""
    ids = {m.emu_id for m in members}
    r = httpx.get(f"{emulator_url}/_emulator/requests", params={"limit": 256})
    return [q for q in r.json()["requests"] if q.get("account") in ids]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_accounts_reach_kiro_through_their_own_proxies(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    members = make_pool(emulator_url, tmp_path, [{}, {}], expired=[True, True])
    with (
        http_proxy("127.0.0.2", "alice", "s3cret,pw") as web,
        socks5_proxy("127.0.0.3", "bob", "hunter2") as socks,
    ):
        proxy_urls = {"p0": web.url(), "p1": socks.url()}
        settings = _settings(emulator_url, members, tmp_path)
        _give_proxies(settings, proxy_urls)
        gw = gateway_factory(
            members[0].account, kiro_creds_dir=tmp_path / "creds", kiro_creds_file=None
        )
        for i in range(4):
            assert f"hello {i}" in _ask(gw, f"hello {i}")
        log = requests_of(emulator_url, members)
        for member, proxy, ip in ((members[0], web, "127.0.0.2"), (members[1], socks, "127.0.0.3")):
            mine = [q for q in log if q["account"] == member.emu_id]
            paths = {q["path"] for q in mine}
            assert any(p.endswith("generateAssistantResponse") for p in paths), (
                paths,
                health_of(gw),
            )
            assert any("refresh" in p.lower() for p in paths), paths  # the expired token
            assert {q["client"] for q in mine} == {ip}, mine  # every call through the proxy
            assert proxy.refused == 0 and proxy.requests >= 1
        # the HTTP proxy forwards one request per connection: its count is the emulator's
        assert web.requests == sum(1 for q in log if q["client"] == "127.0.0.2")
        pool = health_of(gw)
        assert (
            pool["p0"]["network"]
            == f"http://127.0.0.1:{web.port} (login "
            + pool["p0"]["network"].rpartition("(login ")[2]
        )
        text = str(pool)
        assert "s3cret" not in text and "hunter2" not in text and "alice" not in text


@pytest.mark.parametrize("dead", ["closed port", "wrong http password", "wrong socks password"])
def test_a_dead_proxy_rests_its_account_and_the_request_fails_over(
    emulator_url: str,
    tmp_path: Path,
    gateway_factory: Any,
    dead: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    members = make_pool(emulator_url, tmp_path, [{}, {}])
    with http_proxy("127.0.0.2", "u", "right") as web, socks5_proxy("127.0.0.3", "u", "ok") as sk:
        bad = {
            "closed port": f"http://127.0.0.1:{_closed_port()}",
            "wrong http password": web.url(password="wrong"),
            "wrong socks password": sk.url(password="wrong"),
        }[dead]
        settings = _settings(emulator_url, members, tmp_path)
        _give_proxies(settings, {"p0": bad})
        gw = gateway_factory(
            members[0].account, kiro_creds_dir=tmp_path / "creds", kiro_creds_file=None
        )
        assert "still here" in _ask(gw, "still here")
        log = requests_of(emulator_url, members)
        chats = [q for q in log if q["path"].endswith("generateAssistantResponse")]
        assert {q["account"] for q in chats} == {members[1].emu_id}
        assert wait_for(lambda: health_of(gw)["p0"]["reason"] == "proxy")
        p0 = health_of(gw)["p0"]
        assert p0["cooldown_s"] > 0
        if dead != "closed port":
            assert web.refused + sk.refused >= 1
        # `ki2api accounts list` shows it resting for its proxy, without the proxy's password
        capsys.readouterr()
        assert _accounts_cli(settings, "list") == 0
        out = capsys.readouterr().out
        line = next(x for x in out.splitlines() if x.startswith("p0 "))
        assert "cooling down" in line and "(proxy)" in line, out
        assert _accounts_cli(settings, "list", "--json") == 0
        rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
        assert rows["p0"]["cooldown_reason"] == "proxy"
        assert rows["p1"]["cooldown_reason"] is None
        assert "wrong" not in out and "right" not in out


def test_accounts_set_and_add_check_the_proxy_and_its_limit(
    emulator_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    members = make_pool(emulator_url, tmp_path, [{}, {}])
    settings = dataclasses.replace(
        _settings(emulator_url, members, tmp_path), max_accounts_per_proxy=1
    )
    _give_proxies(settings, {})
    url = "socks5://user:pw@127.0.0.1:1080"
    assert _accounts_cli(settings, "set", "p0", "--proxy", url) == 0
    assert "socks5://127.0.0.1:1080" in capsys.readouterr().out
    assert _accounts_cli(settings, "set", "p1", "--proxy", url) == 1
    err = capsys.readouterr().err
    assert "KI2API_MAX_ACCOUNTS_PER_PROXY=1" in err and "pw" not in err
    with pytest.raises(SystemExit):  # argparse: a usage error
        _accounts_cli(settings, "set", "p1", "--proxy", "ftp://x:1")
    assert "unsupported proxy scheme" in capsys.readouterr().err
    assert _accounts_cli(settings, "set", "p1", "--proxy", "none") == 0
    capsys.readouterr()
    assert _accounts_cli(settings, "list") == 0
    out, err = capsys.readouterr()
    assert "via socks5://127.0.0.1:1080 (login" in out and "via direct" in out
    assert "user:pw" not in out + err
    assert "2 accounts share the network path direct" not in err  # 1 direct, 1 proxied
    assert _accounts_cli(settings, "set", "p0", "--proxy", "none") == 0
    capsys.readouterr()
    assert _accounts_cli(settings, "list") == 0
    assert "2 accounts share the network path direct" in capsys.readouterr().err
    files = sorted((tmp_path / "creds").rglob("*.json"))
    assert _accounts_cli(settings, "set", "p0", "--proxy", url) == 0
    assert _accounts_cli(settings, "add", str(files[0]), "--id", "x", "--proxy", url) == 1


def _tls_proxy_ca(where: Path) -> tuple[ssl.SSLContext, Path]:
    """A test CA: the server context of a proxy on 127.0.0.1, and the CA's PEM file."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    pem = where / "proxy-ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    return server, pem


@pytest.mark.parametrize("trusted", [True, False], ids=["ca-file", "unknown-ca"])
def test_an_https_proxy_is_reached_over_checked_tls(
    emulator_url: str, tmp_path: Path, gateway_factory: Any, trusted: bool
) -> None:
    """TLS to the proxy itself: its certificate is checked, against KI2API_PROXY_CA_FILE's CA
    here; without it the test CA is unknown, nothing leaves through the proxy and the account
    rests for its proxy (the check is not weakened)."""
    members = make_pool(emulator_url, tmp_path, [{}, {}], expired=[True, False])
    server_tls, pem = _tls_proxy_ca(tmp_path)
    with https_proxy("127.0.0.4", server_tls, "carol", "tls-pass") as tls_proxy:
        assert tls_proxy.url().startswith("https://carol:tls-pass@127.0.0.1:")
        settings = _settings(emulator_url, members, tmp_path)
        _give_proxies(settings, {"p0": tls_proxy.url()})
        gw = gateway_factory(
            members[0].account, kiro_creds_dir=tmp_path / "creds", kiro_creds_file=None,
            proxy_ca_file=pem if trusted else None,
        )  # fmt: skip
        for i in range(4):
            assert f"over tls {i}" in _ask(gw, f"over tls {i}")
        log = requests_of(emulator_url, members)
        mine = [q for q in log if q["account"] == members[0].emu_id]
        if not trusted:
            assert mine == [] and tls_proxy.requests == 0
            assert wait_for(lambda: health_of(gw)["p0"]["reason"] == "proxy")
            return
        paths = {q["path"] for q in mine}
        assert any(p.endswith("generateAssistantResponse") for p in paths), paths
        assert any("refresh" in p.lower() for p in paths), paths  # httpx over the TLS proxy
        assert {q["client"] for q in mine} == {"127.0.0.4"}, mine
        assert tls_proxy.refused == 0 and tls_proxy.requests == len(mine)
        assert health_of(gw)["p0"]["network"].startswith("https://127.0.0.1:")


def test_quota_and_web_search_go_through_the_accounts_proxy(
    emulator_url: str,
    tmp_path: Path,
    gateway_factory: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    members = make_pool(emulator_url, tmp_path, [{}])
    with http_proxy("127.0.0.5", "dave", "q-pass") as web:
        settings = _settings(emulator_url, members, tmp_path)
        _give_proxies(settings, {"p0": web.url()})
        assert _accounts_cli(settings, "list", "--check-quota") == 0
        assert f"via http://127.0.0.1:{web.port} (login" in capsys.readouterr().out
        quota = [q for q in requests_of(emulator_url, members) if q["path"] == "/getUsageLimits"]
        assert quota and {q["client"] for q in quota} == {"127.0.0.5"}, quota
        gw = gateway_factory(
            members[0].account, kiro_creds_dir=tmp_path / "creds", kiro_creds_file=None
        )
        message = gw.anthropic().messages.create(
            model=MODEL,
            max_tokens=256,
            tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
            messages=[{"role": "user", "content": "Perform a web search for the query: via"}],
        )
        assert [b.type for b in message.content][:2] == [
            "server_tool_use",
            "web_search_tool_result",
        ]
        log = requests_of(emulator_url, members)
        assert [q for q in log if q["path"] == "/mcp"], log
        assert {q["client"] for q in log} == {"127.0.0.5"}  # nothing of p0 went direct
        assert web.refused == 0 and web.requests == len(log)
