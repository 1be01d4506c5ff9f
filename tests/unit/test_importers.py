"""Account sources (token files, directories of them, kiro-cli's SQLite store) and their
registration in the state store (`kiro/accounts/registry.py`)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from ki2api.kiro.accounts.importers import (
    AccountSourceError,
    default_kiro_cli_db,
    load_token_json,
    read_kiro_cli_db,
    safe_id,
    scan_token_dir,
)
from ki2api.kiro.accounts.registry import AccountExists, add_account, store_path, sync_discovered
from ki2api.settings import Settings
from ki2api.state.sqlite import SQLiteStore

SOCIAL = {
    "accessToken": "aoa-social-access",
    "refreshToken": "aor-social-refresh",
    "expiresAt": "2030-01-01T00:00:00.000Z",
    "authMethod": "social",
    "profileArn": "arn:aws:codewhisperer:us-east-1:1:profile/X",
}
IDC = {
    "accessToken": "aoa-idc-access",
    "refreshToken": "aor-idc-refresh",
    "expiresAt": "2030-01-01T00:00:00.000Z",
    "authMethod": "IdC",
    "clientIdHash": "abc123",
    "region": "eu-west-1",
}
REGISTRATION = {"clientId": "cid-1", "clientSecret": "csecret-1", "expiresAt": "2030-01-01Z"}


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


# load_token_json ------------------------------------------------------------------------------


def test_social_file_loaded_as_is(tmp_path: Path) -> None:
    path = write(tmp_path / "kiro-auth-token.json", SOCIAL)
    assert load_token_json(path) == SOCIAL


def test_idc_registration_merged_inline(tmp_path: Path) -> None:
    path = write(tmp_path / "kiro-auth-token.json", IDC)
    write(tmp_path / "abc123.json", REGISTRATION)
    data = load_token_json(path)
    assert data["clientId"] == "cid-1" and data["clientSecret"] == "csecret-1"
    assert data["refreshToken"] == IDC["refreshToken"]


def test_idc_without_registration_still_loads(tmp_path: Path) -> None:
    path = write(tmp_path / "kiro-auth-token.json", IDC)
    assert "clientId" not in load_token_json(path)


def test_social_never_picks_up_a_neighbouring_registration(tmp_path: Path) -> None:
    path = write(tmp_path / "kiro-auth-token.json", SOCIAL)
    write(tmp_path / "other.json", REGISTRATION)
    assert "clientId" not in load_token_json(path)


@pytest.mark.parametrize(
    "content",
    [
        json.dumps({"clientId": "cid-1", "clientSecret": "csecret-1"}),
        json.dumps({"accessToken": "", "refreshToken": None}),
        "not json csecret-1",
        json.dumps(["csecret-1"]),
        json.dumps({**SOCIAL, "authMethod": "ExternalIdp"}),
    ],
    ids=["registration-only", "empty-tokens", "not-json", "not-an-object", "unsupported-method"],
)
def test_unusable_file_raises_naming_the_path_not_the_content(tmp_path: Path, content: str) -> None:
    path = write(tmp_path / "bad.json", content)
    with pytest.raises(AccountSourceError) as info:
        load_token_json(path)
    assert str(path) in str(info.value)
    for secret in ("csecret-1", "aoa-social-access", "aor-social-refresh"):
        assert secret not in str(info.value)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(AccountSourceError, match="nope.json"):
        load_token_json(tmp_path / "nope.json")


# scan_token_dir -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Alice", "alice"),
        ("work account (2)", "work-account-2"),
        ("über_ä", "ber_"),
        ("...", "account"),
        ("x" * 60, "x" * 40),
        ("a-" * 30, ("a-" * 20).rstrip("-")),
    ],
    ids=["lower", "spaces-parens", "non-ascii", "nothing-left", "long", "trailing-dash"],
)
def test_safe_id(raw: str, expected: str) -> None:
    assert safe_id(raw) == expected


def test_scan_names_skips_and_dedupes(tmp_path: Path) -> None:
    root = tmp_path / "creds"
    write(root / "Alice" / "kiro-auth-token.json", SOCIAL)
    write(root / "bob" / ".aws" / "sso" / "cache" / "kiro-auth-token.json", IDC)
    write(root / "bob" / ".aws" / "sso" / "cache" / "abc123.json", REGISTRATION)  # companion
    write(root / "work.json", SOCIAL)
    write(root / "sub" / "work.json", SOCIAL)  # same stem: made unique
    write(root / "broken.json", "{")
    write(root / "notes.txt", "hello")
    write(root / "kiro-auth-token.json", SOCIAL)  # at the root: the stem
    found = scan_token_dir(root)
    assert [(i, p.relative_to(root).as_posix()) for i, p in found] == [
        ("alice", "Alice/kiro-auth-token.json"),
        ("bob", "bob/.aws/sso/cache/kiro-auth-token.json"),
        ("kiro-auth-token", "kiro-auth-token.json"),
        ("work", "sub/work.json"),
        ("work-2", "work.json"),
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_scan_skips_unreadable(tmp_path: Path) -> None:
    write(tmp_path / "a.json", SOCIAL)
    locked = write(tmp_path / "b.json", SOCIAL)
    locked.chmod(0)
    try:
        assert [i for i, _ in scan_token_dir(tmp_path)] == ["a"]
    finally:
        locked.chmod(0o600)


def test_scan_of_a_missing_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(AccountSourceError, match="not a directory"):
        scan_token_dir(tmp_path / "missing")


# kiro-cli ---------------------------------------------------------------------------------------


def make_db(path: Path, auth: dict[str, Any], state: dict[str, Any] | None = None) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE auth_kv (key TEXT PRIMARY KEY, value TEXT)")
    conn.executemany(
        "INSERT INTO auth_kv VALUES (?, ?)", [(k, json.dumps(v)) for k, v in auth.items()]
    )
    if state is not None:
        conn.execute("CREATE TABLE state (key TEXT PRIMARY KEY, value BLOB)")
        conn.executemany(
            "INSERT INTO state VALUES (?, ?)",
            [(k, json.dumps(v).encode()) for k, v in state.items()],
        )
    conn.commit()
    conn.close()
    return path


SOCIAL_ROW = {
    "access_token": "cli-social-access",
    "refresh_token": "cli-social-refresh",
    "expires_at": "2026-01-24T02:29:46.233105Z",
    "profile_arn": "arn:aws:codewhisperer:us-east-1:1:profile/S",
}
IDC_ROW = {
    "access_token": "cli-idc-access",
    "refresh_token": "cli-idc-refresh",
    "expires_at": "2026-01-24T02:29:46Z",
    "region": "eu-central-1",
    "scopes": ["codewhisperer:completions"],
}
REG_ROW = {"client_id": "cli-cid", "client_secret": "cli-csecret", "region": "eu-central-1"}


def test_kiro_cli_social_and_idc(tmp_path: Path) -> None:
    db = make_db(
        tmp_path / "data.sqlite3",
        {
            "kirocli:social:token": SOCIAL_ROW,
            "kirocli:odic:token": IDC_ROW,
            "codewhisperer:odic:token": IDC_ROW,  # the same login under the legacy key
            "kirocli:odic:device-registration": REG_ROW,
        },
        state={"api.codewhisperer.profile": {"arn": "arn:aws:codewhisperer:x:2:profile/P"}},
    )
    social, idc = read_kiro_cli_db(db)
    assert social == {
        "authMethod": "social",
        "accessToken": "cli-social-access",
        "refreshToken": "cli-social-refresh",
        "profileArn": "arn:aws:codewhisperer:us-east-1:1:profile/S",
        "expiresAt": "2026-01-24T02:29:46.233Z",
    }
    assert idc == {
        "authMethod": "IdC",
        "accessToken": "cli-idc-access",
        "refreshToken": "cli-idc-refresh",
        "expiresAt": "2026-01-24T02:29:46.000Z",
        "region": "eu-central-1",
        "profileArn": "arn:aws:codewhisperer:x:2:profile/P",
        "clientId": "cli-cid",
        "clientSecret": "cli-csecret",
    }


@pytest.mark.parametrize(
    ("expires", "expected"),
    [
        (1767225600, "2026-01-01T00:00:00.000Z"),
        (1767225600000, "2026-01-01T00:00:00.000Z"),
        ("2026-01-01T01:00:00+01:00", "2026-01-01T00:00:00.000Z"),
        ("soon", None),
        (None, None),
    ],
    ids=["epoch-s", "epoch-ms", "offset", "garbage", "missing"],
)
def test_kiro_cli_expiry_formats(tmp_path: Path, expires: Any, expected: str | None) -> None:
    row = {"access_token": "a", "refresh_token": "r", "expires_at": expires}
    (token,) = read_kiro_cli_db(make_db(tmp_path / "d.sqlite3", {"kirocli:social:token": row}))
    assert token.get("expiresAt") == expected


def test_kiro_cli_external_idp_skipped_with_a_note(tmp_path: Path) -> None:
    db = make_db(
        tmp_path / "d.sqlite3",
        {
            "kirocli:external-idp:token": {"access_token": "x", "refresh_token": "y"},
            "codewhisperer:odic:token": IDC_ROW,  # no registration stored
            "kirocli:social:token": {"profile_arn": "arn:only"},  # no tokens: skipped
        },
    )
    notes: list[str] = []
    tokens = read_kiro_cli_db(db, notes)
    assert [t["refreshToken"] for t in tokens] == ["cli-idc-refresh"]
    assert "clientId" not in tokens[0]
    assert any("external" in n and "not supported" in n for n in notes)
    assert any("no device registration" in n for n in notes)


def test_kiro_cli_db_opened_read_only(tmp_path: Path) -> None:
    db = make_db(tmp_path / "d.sqlite3", {"kirocli:social:token": SOCIAL_ROW})
    before = db.read_bytes()
    db.chmod(0o400)
    try:
        assert len(read_kiro_cli_db(db)) == 1
    finally:
        db.chmod(0o600)
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.sqlite3"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "no kiro-cli database"),
        ("no-table", "no auth_kv table"),
        ("not-sqlite", "cannot read the kiro-cli database"),
    ],
    ids=["missing", "no-table", "not-sqlite"],
)
def test_kiro_cli_db_problems(tmp_path: Path, setup: str, message: str) -> None:
    db = tmp_path / "d.sqlite3"
    if setup == "no-table":
        sqlite3.connect(db).close()
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE other (x)")
        conn.commit()
        conn.close()
    elif setup == "not-sqlite":
        db.write_bytes(b"this is not a database, not at all" * 100)
    with pytest.raises(AccountSourceError, match=message):
        read_kiro_cli_db(db)


def test_default_kiro_cli_db(tmp_path: Path) -> None:
    linux = tmp_path / ".local" / "share" / "kiro-cli" / "data.sqlite3"
    assert default_kiro_cli_db(tmp_path) == linux
    mac = write(tmp_path / "Library" / "Application Support" / "kiro-cli" / "data.sqlite3", "")
    assert default_kiro_cli_db(tmp_path) == mac
    write(linux, "")
    assert default_kiro_cli_db(tmp_path) == linux


# registry: discovered accounts in the store ----------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    opened = SQLiteStore.open(tmp_path / "data" / "ki2api.sqlite3")
    yield opened
    await opened.aclose()


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        home_dir=tmp_path / "home",
        work_dir=tmp_path / "work",
        data_dir=tmp_path / "data",
        **overrides,
    )


def login(n: int) -> dict[str, Any]:
    return {**SOCIAL, "accessToken": f"access-{n}", "refreshToken": f"refresh-{n}"}


async def test_sync_keeps_ids_and_machine_ids_and_forgets_vanished(
    tmp_path: Path, store: Any
) -> None:
    pool = tmp_path / "pool"
    write(tmp_path / "home" / ".aws" / "sso" / "cache" / "kiro-auth-token.json", login(0))
    for n, name in enumerate(("a", "b"), 1):
        write(pool / name / "kiro-auth-token.json", login(n))
    settings = settings_for(tmp_path, kiro_creds_dir=pool)
    first = await sync_discovered(settings, store)
    assert [(r.id, r.source) for r in first] == [("default", "file"), ("a", "file"), ("b", "file")]
    assert all(len(r.machine_id) == 64 for r in first)
    assert len({r.machine_id for r in first}) == 3
    assert await store.load_tokens("a") is None  # a file account's tokens stay in its file
    assert await sync_discovered(settings, store) == first
    (pool / "b" / "kiro-auth-token.json").unlink()
    second = await sync_discovered(settings, store)
    assert second == first[:2]
    assert [r.id for r in await store.list_accounts()] == ["a", "default"]
    assert store_path(settings) == tmp_path / "data" / "ki2api.sqlite3"


async def test_sync_env_login_and_store_accounts_untouched(tmp_path: Path, store: Any) -> None:
    added = await add_account(store, login(5), label="added")
    settings = settings_for(tmp_path, kiro_refresh_token="refresh-env")
    (env,) = await sync_discovered(settings, store)
    assert (env.id, env.source, env.path) == ("env", "env", None)
    (again,) = await sync_discovered(settings, store)
    assert again.machine_id == env.machine_id
    assert await sync_discovered(settings_for(tmp_path), store) == []
    assert await store.list_accounts() == [added]


async def test_sync_deduplicates_and_prefixes_colliding_ids(tmp_path: Path, store: Any) -> None:
    pool = tmp_path / "pool"
    write(pool / "acct-1" / "kiro-auth-token.json", login(1))
    write(pool / "same-path" / "kiro-auth-token.json", login(2))
    write(pool / "same-refresh.json", {**login(2), "accessToken": "other"})
    write(pool / "in-store.json", login(3))
    stored_one = await add_account(store, login(3), label="added")  # gets id acct-1
    assert stored_one.id == "acct-1"
    settings = settings_for(
        tmp_path, kiro_creds_dir=pool, kiro_creds_file=pool / "same-path" / "kiro-auth-token.json"
    )
    found = await sync_discovered(settings, store)
    assert [r.id for r in found] == ["default", "dir-acct-1"]
    assert found[0].path == str(pool / "same-path" / "kiro-auth-token.json")


async def test_sync_keeps_a_user_disabled_discovered_account(tmp_path: Path, store: Any) -> None:
    write(tmp_path / "home" / ".aws" / "sso" / "cache" / "kiro-auth-token.json", login(1))
    settings = settings_for(tmp_path)
    await sync_discovered(settings, store)
    await store.set_enabled("default", False, "disabled by user")
    (record,) = await sync_discovered(settings, store)
    assert (record.enabled, record.disabled_reason) == (False, "disabled by user")


async def test_add_account_ids_duplicates_and_bad_input(tmp_path: Path, store: Any) -> None:
    first = await add_account(store, login(1), label="one", priority=3, weight=0)
    second = await add_account(store, login(2), label="two")
    assert (first.id, first.source, first.priority, first.weight) == ("acct-1", "store", 3, 1)
    assert second.id == "acct-2"
    tokens = await store.load_tokens("acct-1")
    assert tokens is not None and tokens.version == 1 and tokens.data["refreshToken"] == "refresh-1"
    with pytest.raises(AccountExists) as info:
        await add_account(store, {**login(1), "accessToken": "newer"}, label="again")
    assert info.value.record == first
    with pytest.raises(AccountSourceError, match="already taken"):
        await add_account(store, login(3), label="x", account_id="acct-2")
    with pytest.raises(AccountSourceError, match="use only"):
        await add_account(store, login(3), label="x", account_id="Bad Id")
    with pytest.raises(AccountSourceError, match="no accessToken"):
        await add_account(store, {"refreshToken": ""}, label="empty")
    idc_json = {**IDC, "clientId": "c", "clientSecret": "idc-client-secret"}
    idc = await add_account(store, idc_json, label="i")
    assert (idc.id, idc.auth_method) == ("acct-3", "idc")
    idc_tokens = await store.load_tokens("acct-3")
    assert idc_tokens is not None and idc_tokens.data["clientSecret"] == "idc-client-secret"
    assert "idc-client-secret" not in repr(idc_tokens) + repr(idc)
