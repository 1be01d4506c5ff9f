"""`ki2api accounts ...` run as a real subprocess against the session emulator.

Each test gets its own HOME, working directory and data directory, and no `KIRO_*` /
`KI2API_*` variable from the developer's shell. Every output is checked for the tokens and
client secrets of the accounts involved: none may ever be printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.kiro.accounts.quota import fetch_quota
from ki2api.state.sqlite import SQLiteStore
from tests.conftest import Account, make_account, make_expired_account

SCRIPT = Path(sys.executable).with_name("ki2api")
_SCRUBBED = {"API_KEY", "HOST", "PORT", "LOG_LEVEL"}


@dataclass
class Cli:
    root: Path
    emulator_url: str
    secrets: set[str] = field(default_factory=set)

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def store(self) -> Path:
        return self.root / "data" / "ki2api.sqlite3"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("KIRO_", "KI2API_")) and k not in _SCRUBBED
        }
        env.update(
            HOME=str(self.home),
            KI2API_ENV_FILE=str(self.root / "no-such.env"),
            KI2API_DATA_DIR=str(self.root / "data"),
            KIRO_API_BASE=self.emulator_url,
            KIRO_AUTH_BASE=self.emulator_url,
            KIRO_OIDC_BASE=self.emulator_url,
        )
        env.update(extra)
        return env

    def run(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(SCRIPT), *args],
            cwd=self.root / "cwd",
            env=self.env(**extra_env),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        for secret in self.secrets:
            assert secret not in done.stdout + done.stderr, f"a secret was printed by {args}"
        return done

    def ok(self, *args: str, **extra_env: str) -> str:
        done = self.run(*args, **extra_env)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def listed(self, *extra: str, **extra_env: str) -> dict[str, dict[str, Any]]:
        rows = json.loads(self.ok("accounts", "list", "--json", *extra, **extra_env))
        return {row["id"]: row for row in rows}

    def remember(self, account: Account) -> Account:
        """Note an emulator account's secrets, so every later output is checked for them."""
        tf = account.data["token_file"]
        self.secrets.update({tf["accessToken"], tf["refreshToken"]})
        reg = account.data.get("client_registration") or {}
        if reg.get("clientSecret"):
            self.secrets.add(reg["clientSecret"])
        return account

    def account(self, where: Path, **kwargs: Any) -> Account:
        return self.remember(make_account(self.emulator_url, where, **kwargs))


@pytest.fixture
def cli(tmp_path: Path, emulator_url: str) -> Cli:
    for name in ("home", "cwd"):
        (tmp_path / name).mkdir()
    return Cli(tmp_path.resolve(), emulator_url)


def stored(cli: Cli) -> dict[str, tuple[Any, dict[str, Any] | None]]:
    """The store as the gateway sees it: id -> (record, token JSON or None)."""

    async def read() -> dict[str, tuple[Any, dict[str, Any] | None]]:
        store = SQLiteStore.open(cli.store)
        try:
            out = {}
            for record in await store.list_accounts():
                tokens = await store.load_tokens(record.id)
                out[record.id] = (record, dict(tokens.data) if tokens else None)
            return out
        finally:
            await store.aclose()

    return asyncio.run(read())


def emulator_calls(emulator_url: str, path: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{emulator_url}/_emulator/requests", params={"limit": 500})
    return [q for q in r.json()["requests"] if q["path"] == path]


# add / list / disable / enable / remove --------------------------------------------------------


def test_add_list_disable_enable_remove(cli: Cli) -> None:
    acct = cli.account(cli.root / "src")
    out = cli.ok("accounts", "add", str(acct.token_file), "--id", "work", "--priority", "2")
    assert "added work (social" in out
    rows = cli.listed()
    assert set(rows) == {"work"}
    assert rows["work"] | {"label": None} == rows["work"] | {
        "label": None,
        "source": "store",
        "auth_method": "social",
        "priority": 2,
        "weight": 1,
        "enabled": True,
        "state": "ok",
    }
    record, tokens = stored(cli)["work"]
    assert tokens is not None and tokens["refreshToken"] == acct.data["token_file"]["refreshToken"]
    assert len(record.machine_id) == 64

    again = cli.ok("accounts", "add", str(acct.token_file))
    assert "already in the pool as work" in again
    assert set(cli.listed()) == {"work"}

    assert "disabled work" in cli.ok("accounts", "disable", "work")
    text = cli.ok("accounts", "list")
    assert "disabled (disabled by user)" in text
    assert cli.listed()["work"]["enabled"] is False
    assert "enabled work" in cli.ok("accounts", "enable", "work")
    assert cli.listed()["work"]["state"] == "ok"
    assert stored(cli)["work"][0].machine_id == record.machine_id

    assert "removed work" in cli.ok("accounts", "remove", "work")
    assert cli.listed() == {}
    missing = cli.run("accounts", "remove", "work")
    assert missing.returncode == 1 and "no account 'work'" in missing.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("accounts",),
        ("accounts", "add"),
        ("accounts", "add", "x.json", "--weight", "0"),
        ("accounts", "frobnicate"),
        ("serve", "--workers", "0"),
    ],
    ids=["no-subcommand", "add-without-file", "weight-zero", "unknown", "workers-zero"],
)
def test_usage_errors_exit_2(cli: Cli, args: tuple[str, ...]) -> None:
    assert cli.run(*args).returncode == 2


def test_problems_exit_1_with_one_line(cli: Cli) -> None:
    bad = cli.root / "bad.json"
    bad.write_text(json.dumps({"clientId": "c", "clientSecret": "registration-secret"}))
    cli.secrets.add("registration-secret")
    for args in (
        ("accounts", "add", str(cli.root / "missing.json")),
        ("accounts", "add", str(bad)),
        ("accounts", "import", str(cli.root / "no-dir")),
        ("accounts", "disable", "nobody"),
        ("accounts", "import-kiro-cli"),  # no kiro-cli database in this HOME
    ):
        done = cli.run(*args)
        assert done.returncode == 1, args
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith("ki2api accounts: ")


def _refreshes(cli: Cli, account_id: str) -> int:
    stats = httpx.get(f"{cli.emulator_url}/_emulator/stats").json()["accounts"]
    return int(stats[account_id]["refreshes"])


def test_refresh_renews_the_stored_token(cli: Cli) -> None:
    acct = cli.account(cli.root / "src")
    cli.ok("accounts", "add", str(acct.token_file), "--id", "one")
    before = _refreshes(cli, acct.id)
    out = cli.ok("accounts", "refresh", "one")
    assert "token refreshed" in out
    assert _refreshes(cli, acct.id) == before + 1
    listed = cli.listed()["one"]
    assert listed["state"].startswith("ok"), listed
    done = cli.run("accounts", "refresh", "nobody")
    assert done.returncode == 1 and "no account 'nobody'" in done.stderr


# import DIR / discovery ----------------------------------------------------------------------


def test_import_directory(cli: Cli) -> None:
    pool = cli.root / "pool"
    accounts = {
        "alice": cli.account(pool / "alice"),
        "bob": cli.account(pool / "bob", auth_method="idc"),
        "carol": cli.account(pool / "carol"),
    }
    out = cli.ok("accounts", "import", str(pool))
    assert [line.split()[1] for line in out.splitlines()] == ["alice", "bob", "carol"]
    rows = cli.listed()
    assert {k: (v["source"], v["auth_method"]) for k, v in rows.items()} == {
        "alice": ("store", "social"),
        "bob": ("store", "idc"),
        "carol": ("store", "social"),
    }
    tokens = {k: v[1] for k, v in stored(cli).items()}
    reg = accounts["bob"].data["client_registration"]
    assert tokens["bob"] is not None and tokens["bob"]["clientSecret"] == reg["clientSecret"]
    assert tokens["bob"]["clientId"] == reg["clientId"]
    again = cli.ok("accounts", "import", str(pool))
    assert again.count("already in the pool") == 3
    assert "alice" in cli.ok("accounts", "list")


def test_discovered_accounts_listed_kept_and_protected(cli: Cli) -> None:
    home_acct = cli.account(cli.home)
    pool = cli.root / "pool"
    for name in ("x1", "x2"):
        cli.account(pool / name)
    env = {"KIRO_CREDS_DIR": str(pool)}
    rows = cli.listed(**env)
    assert {k: v["source"] for k, v in rows.items()} == {
        "default": "file",
        "x1": "file",
        "x2": "file",
    }
    assert rows["default"]["path"] == str(home_acct.token_file)
    machine_ids = {k: v[0].machine_id for k, v in stored(cli).items()}
    assert all(v[1] is None for v in stored(cli).values())  # file tokens stay in the files

    cli.listed(**env)
    assert {k: v[0].machine_id for k, v in stored(cli).items()} == machine_ids

    refused = cli.run("accounts", "remove", "x1", **env)
    assert refused.returncode == 1 and "delete or move" in refused.stderr
    assert "disabled x1" in cli.ok("accounts", "disable", "x1", **env)
    assert cli.listed(**env)["x1"]["state"] == "disabled (disabled by user)"

    assert set(cli.listed()) == {"default"}  # KIRO_CREDS_DIR unset: its accounts are gone
    env_rows = cli.listed(KIRO_REFRESH_TOKEN="env-refresh-secret")
    cli.secrets.add("env-refresh-secret")
    assert {k: v["source"] for k, v in env_rows.items()} == {"env": "env"}
    assert "removed default" not in cli.ok("accounts", "list")
    forced = cli.ok("accounts", "remove", "default", "--force")
    assert "removed default" in forced


def test_discovered_login_already_in_the_store_is_not_doubled(cli: Cli) -> None:
    acct = cli.account(cli.root / "src")
    cli.ok("accounts", "add", str(acct.token_file), "--id", "mine")
    cache = cli.home / ".aws" / "sso" / "cache"
    cache.mkdir(parents=True)
    (cache / "kiro-auth-token.json").write_bytes(acct.token_file.read_bytes())
    assert set(cli.listed()) == {"mine"}


def test_adding_a_discovered_login_says_where_it_is(cli: Cli) -> None:
    acct = cli.account(cli.home)
    out = cli.ok("accounts", "add", str(acct.token_file))
    assert "already in the pool as default" in out
    assert set(cli.listed()) == {"default"}


# kiro-cli --------------------------------------------------------------------------------------


def kiro_cli_db(path: Path, social: Account, idc: Account) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    s, i = social.data["token_file"], idc.data["token_file"]
    reg = idc.data["client_registration"]
    rows = {
        "kirocli:social:token": {
            "access_token": s["accessToken"],
            "refresh_token": s["refreshToken"],
            "expires_at": s["expiresAt"],
            "profile_arn": s["profileArn"],
        },
        "kirocli:odic:token": {
            "access_token": i["accessToken"],
            "refresh_token": i["refreshToken"],
            "expires_at": i["expiresAt"],
            "region": "us-east-1",
        },
        "kirocli:odic:device-registration": {
            "client_id": reg["clientId"],
            "client_secret": reg["clientSecret"],
            "region": "us-east-1",
        },
        "kirocli:external-idp:token": {"access_token": "ext-a", "refresh_token": "ext-r"},
    }
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE auth_kv (key TEXT PRIMARY KEY, value TEXT)")
    conn.executemany(
        "INSERT INTO auth_kv VALUES (?, ?)", [(k, json.dumps(v)) for k, v in rows.items()]
    )
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("where", ["given", "default"], ids=["db-argument", "default-path"])
def test_import_kiro_cli(cli: Cli, where: str) -> None:
    social = cli.account(cli.root / "s")
    idc = cli.account(cli.root / "i", auth_method="idc")
    cli.secrets.update({"ext-a", "ext-r"})
    default = cli.home / ".local" / "share" / "kiro-cli" / "data.sqlite3"
    db = kiro_cli_db(default if where == "default" else cli.root / "cli.sqlite3", social, idc)
    args = ("accounts", "import-kiro-cli") + ((str(db),) if where == "given" else ())
    done = cli.run(*args)
    assert done.returncode == 0, done.stderr
    assert "external" in done.stderr
    rows = cli.listed()
    assert {k: v["auth_method"] for k, v in rows.items()} == {
        "kiro-cli-social": "social",
        "kiro-cli-idc": "idc",
    }
    tokens = stored(cli)["kiro-cli-idc"][1]
    assert tokens is not None and tokens["clientId"] == idc.data["client_registration"]["clientId"]
    assert cli.run(*args).stdout.count("already in the pool") == 2


# quota -----------------------------------------------------------------------------------------


def test_list_check_quota(cli: Cli) -> None:
    fresh = cli.account(cli.root / "a")
    dry = cli.account(cli.root / "b", quota_exhausted=True)
    expired = cli.remember(make_expired_account(cli.emulator_url, cli.root / "c"))
    for name, acct in (("fresh", fresh), ("dry", dry), ("expired", expired)):
        cli.ok("accounts", "add", str(acct.token_file), "--id", name)
    cli.ok("accounts", "disable", "dry")
    before = len(emulator_calls(cli.emulator_url, "/getUsageLimits"))
    done = cli.run("accounts", "list", "--check-quota")
    assert done.returncode == 0, done.stderr
    assert "expired: quota not checked" in done.stderr
    assert "50/50 left, resets" in done.stdout
    calls = emulator_calls(cli.emulator_url, "/getUsageLimits")[before:]
    assert [c["account"] for c in calls] == [fresh.id]  # disabled and expired ones skipped

    cli.ok("accounts", "enable", "dry")
    rows = cli.listed("--check-quota")
    now = time.time()
    assert (rows["fresh"]["quota_remaining"], rows["fresh"]["quota_limit"]) == (50, 50)
    assert (rows["dry"]["quota_remaining"], rows["dry"]["quota_limit"]) == (0, 50)
    assert rows["fresh"]["quota_reset_at"] > now and rows["fresh"]["quota_checked_at"] <= now
    assert rows["expired"]["quota_remaining"] is None
    assert rows["fresh"]["state"] == "ok"


async def test_fetch_quota_direct(emulator_url: str, tmp_path: Path) -> None:
    acct = make_account(emulator_url, tmp_path)
    tf = acct.data["token_file"]
    async with httpx.AsyncClient() as http:
        quota = await fetch_quota(
            http,
            api_base=emulator_url + "/",
            access_token=tf["accessToken"],
            profile_arn=tf["profileArn"],
            machine_id="ab" * 32,
        )
        assert (quota.remaining, quota.limit, quota.subscription) == (50.0, 50.0, "KIRO FREE")
        call = emulator_calls(emulator_url, "/getUsageLimits")[-1]
        assert call["account"] == acct.id
        assert call["headers"]["x-amz-user-agent"].endswith("ab" * 32)
        with pytest.raises(GatewayError) as info:
            await fetch_quota(
                http,
                api_base=emulator_url,
                access_token="not-a-token",
                profile_arn=None,
                machine_id="ab" * 32,
            )
        assert info.value.kind is ErrorKind.UPSTREAM_AUTH
        with pytest.raises(GatewayError) as down:
            await fetch_quota(
                http,
                api_base="http://127.0.0.1:9",
                access_token="x",
                profile_arn=None,
                machine_id="ab" * 32,
            )
        assert down.value.kind is ErrorKind.UPSTREAM_UNAVAILABLE


# a copied login diverges from its source; --link shares it ---------------------------------------


def test_a_copied_login_says_it_will_diverge(cli: Cli) -> None:
    acct = cli.account(cli.root / "src")
    done = cli.run("accounts", "add", str(acct.token_file))
    assert done.returncode == 0, done.stderr
    assert "a copy in the store" in done.stdout
    assert "copy stops working" in done.stderr and "--link" in done.stderr


def test_a_linked_login_keeps_using_its_token_file(cli: Cli) -> None:
    """`accounts add --link`: the store keeps no copy; a refresh (Kiro rotates the refresh
    token) is written back to the file, so the program that owns it keeps working too."""
    acct = cli.account(cli.root / "src", rotate_refresh_token=True)
    out = cli.ok("accounts", "add", "--link", str(acct.token_file), "--id", "ide")
    assert "added ide" in out and "reading the file itself" in out
    row = cli.listed()["ide"]
    assert row["source"] == "linked"
    record, tokens = stored(cli)["ide"]
    assert tokens is None and record.path == str(acct.token_file.resolve())
    before = json.loads(acct.token_file.read_text())["refreshToken"]
    cli.ok("accounts", "refresh", "ide")
    after = json.loads(acct.token_file.read_text())
    assert after["refreshToken"] != before  # rotated by Kiro, and written back to the file
    cli.secrets.update({after["refreshToken"], after["accessToken"]})
    assert stored(cli)["ide"][1] is None  # still no copy in the store
    # the same file cannot be added twice, linked or copied
    assert "already in the pool as ide" in cli.ok("accounts", "add", str(acct.token_file))


def test_import_link(cli: Cli) -> None:
    first = cli.account(cli.root / "a")
    second = cli.account(cli.root / "b")
    tree = cli.root / "tree"
    for name, acct in (("one", first), ("two", second)):
        (tree / name).mkdir(parents=True)
        (tree / name / "kiro-auth-token.json").write_text(acct.token_file.read_text())
    done = cli.run("accounts", "import", "--link", str(tree))
    assert done.returncode == 0, done.stderr
    assert "copy stops working" not in done.stderr
    rows = cli.listed()
    assert {r["source"] for r in rows.values()} == {"linked"} and len(rows) == 2


def test_list_shows_each_accounts_profile_and_kiro_region(cli: Cli) -> None:
    eu = cli.account(cli.root / "eu", region="eu-central-1")
    us = cli.account(cli.root / "us")
    cli.ok("accounts", "add", str(eu.token_file), "--id", "eu")
    cli.ok("accounts", "add", "--link", str(us.token_file), "--id", "us")
    rows = cli.listed()
    assert rows["eu"]["profile_arn"] == eu.data["profile_arn"]
    assert (rows["eu"]["kiro_region"], rows["us"]["kiro_region"]) == ("eu-central-1", "us-east-1")
    assert rows["us"]["profile_arn"] == us.data["profile_arn"]  # read from the linked file
    text = cli.ok("accounts", "list")
    assert f"{eu.data['profile_arn']}; Kiro eu-central-1" in text
    forced = cli.listed(KIRO_REGION="us-east-1")
    assert forced["eu"]["kiro_region"] == "us-east-1"  # the override
