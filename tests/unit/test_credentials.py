"""KiroCredentials against a fake of the two upstream refresh endpoints (httpx.MockTransport).

The fake is an upstream stand-in, not a mock of our code: it keeps its own set of valid refresh
tokens, rotates them when asked, and answers the documented shapes and error bodies.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import stat
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.kiro.login import token_file as tokenfile
from ki2api.kiro.login.credentials import CredentialSource, KiroCredentials
from ki2api.kiro.login.token_home import StoreTokenHome
from ki2api.settings import Settings
from ki2api.state.base import AccountRecord
from ki2api.state.sqlite import SQLiteStore

T0 = datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
PROFILE = "arn:aws:codewhisperer:us-east-1:111111111111:profile/OLD"
NEW_PROFILE = "arn:aws:codewhisperer:us-east-1:111111111111:profile/NEW"
HASH = "c" * 40


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclasses.dataclass
class FakeKiroAuth:
    """`/refreshToken` (social) and `/token` (SSO-OIDC) with real validation."""

    valid_refresh: set[str] = dataclasses.field(default_factory=lambda: {"aor-0"})
    clients: dict[str, str] = dataclasses.field(default_factory=lambda: {"cid-1": "csec-1"})
    rotate: bool = False
    ttl: int = 3600
    profile_arn: str | None = NEW_PROFILE
    fail: tuple[int, dict[str, Any]] | None = None
    network_down: bool = False
    delay_s: float = 0.01
    refreshes: int = 0
    requests: list[tuple[str, str, dict[str, Any]]] = dataclasses.field(default_factory=list)

    async def handler(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(self.delay_s)  # give concurrent callers time to pile up
        body = json.loads(request.content)
        self.requests.append((request.url.host, request.url.path, body))
        if self.network_down:
            raise httpx.ConnectError("connection refused", request=request)
        if self.fail is not None:
            return httpx.Response(self.fail[0], json=self.fail[1])
        if request.url.path == "/token":
            ok = self.clients.get(body.get("clientId")) == body.get("clientSecret")
            if not ok or body.get("grantType") != "refresh_token":
                return httpx.Response(400, json={"error": "invalid_client"})
        elif request.url.path != "/refreshToken":
            return httpx.Response(404, json={"message": "not found"})
        old = body.get("refreshToken")
        if old not in self.valid_refresh:
            return httpx.Response(
                400, json={"error": "invalid_grant", "error_description": "Invalid refresh token"}
            )
        self.refreshes += 1
        out: dict[str, Any] = {"accessToken": f"aoa-{self.refreshes}", "expiresIn": self.ttl}
        if self.rotate:
            self.valid_refresh.discard(old)
            out["refreshToken"] = f"aor-{self.refreshes}"
            self.valid_refresh.add(out["refreshToken"])
        if request.url.path == "/refreshToken" and self.profile_arn:
            out["profileArn"] = self.profile_arn
        return httpx.Response(200, json=out)


@pytest.fixture
def upstream() -> FakeKiroAuth:
    return FakeKiroAuth()


@pytest.fixture
async def http(upstream: FakeKiroAuth) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(upstream.handler)) as client:
        yield client


def base_settings(tmp_path: Path, **changes: Any) -> Settings:
    defaults: dict[str, Any] = {
        "home_dir": tmp_path / "home",
        "work_dir": tmp_path / "work",
        "kiro_auth_base": "https://auth.test",
        "kiro_oidc_base": "https://oidc.test",
    }
    return dataclasses.replace(Settings(), **{**defaults, **changes})


def social_file(expires: str = "2026-01-02T03:06:05.000Z", **extra: Any) -> dict[str, Any]:
    return {
        "accessToken": "aoa-0",
        "refreshToken": "aor-0",
        "profileArn": PROFILE,
        "expiresAt": expires,
        "authMethod": "social",
        "provider": "Github",
        **extra,
    }


def idc_file(expires: str = "2026-01-02T03:06:05.000Z", **extra: Any) -> dict[str, Any]:
    return {
        "accessToken": "aoa-0",
        "refreshToken": "aor-0",
        "expiresAt": expires,
        "clientIdHash": HASH,
        "authMethod": "IdC",
        "provider": "BuilderId",
        "region": "us-east-1",
        **extra,
    }


MakeCreds = Callable[..., tuple[KiroCredentials, Path]]


@pytest.fixture
def make_creds(tmp_path: Path, http: httpx.AsyncClient) -> MakeCreds:
    def make(
        data: dict[str, Any], *, clock: Clock | None = None, **settings: Any
    ) -> tuple[KiroCredentials, Path]:
        cache = tmp_path / "cache"
        cache.mkdir(exist_ok=True)
        path = cache / "kiro-auth-token.json"
        path.write_text(json.dumps(data, indent=2))
        source = CredentialSource("file", path, f"token file {path}")
        creds = KiroCredentials(
            source, base_settings(tmp_path, **settings), http, clock=clock or Clock()
        )
        return creds, path

    return make


def on_disk(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(path.read_text())
    return result


# -- refresh ahead of expiry, write-back -----------------------------------------------------

# expiresAt style in the file -> what the refreshed expiry (T0 + 3600 s) must look like
STYLES = [
    ("js-millis", "2026-01-02T03:06:05.000Z", "2026-01-02T04:04:05.678Z"),
    ("offset-no-millis", "2026-01-02T03:06:05+00:00", "2026-01-02T04:04:05+00:00"),
    ("rfc3339-z", "2026-01-02T03:06:05Z", "2026-01-02T04:04:05Z"),
    ("micros", "2026-01-02T03:06:05.000000Z", "2026-01-02T04:04:05.678901Z"),
    ("nanos", "2026-01-02T03:06:05.123456789Z", "2026-01-02T04:04:05.678901000Z"),
    ("plus-eight", "2026-01-02T11:06:05.000+08:00", "2026-01-02T12:04:05.678+08:00"),
]


@pytest.mark.parametrize(
    ("written", "expected"), [s[1:] for s in STYLES], ids=[s[0] for s in STYLES]
)
async def test_refresh_ahead_writes_back_keeping_fields_and_format(
    make_creds: MakeCreds, upstream: FakeKiroAuth, written: str, expected: str
) -> None:
    creds, path = make_creds(social_file(written, machineId="m-1", futureKey={"a": [1]}))
    path.chmod(0o644)
    auth = await creds.current()  # expires in 2 min < refresh_ahead_s (300)
    assert auth.access_token == "aoa-1"
    assert auth.profile_arn == NEW_PROFILE
    assert auth.expires_at == T0 + timedelta(seconds=3600)
    assert upstream.refreshes == 1 and creds.refresh_count == 1
    saved = on_disk(path)
    assert saved == {
        **social_file(expected, machineId="m-1", futureKey={"a": [1]}),
        "accessToken": "aoa-1",
        "profileArn": NEW_PROFILE,
    }
    assert saved["refreshToken"] == "aor-0"  # no rotation: the old refresh token is kept
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert list(saved) == list(social_file())[:4] + [
        "authMethod",
        "provider",
        "machineId",
        "futureKey",
    ]


async def test_fresh_token_is_used_without_refreshing(
    make_creds: MakeCreds, upstream: FakeKiroAuth
) -> None:
    creds, _ = make_creds(social_file("2026-01-02T05:00:00.000Z"))
    auth = await creds.current()
    assert (auth.access_token, auth.profile_arn, auth.auth_method) == ("aoa-0", PROFILE, "social")
    assert upstream.refreshes == 0 and upstream.requests == []


@pytest.mark.parametrize(
    ("ahead_s", "expect_refresh"), [(300.0, False), (900.0, True)], ids=["outside", "inside"]
)
async def test_refresh_ahead_window_is_the_setting(
    make_creds: MakeCreds, upstream: FakeKiroAuth, ahead_s: float, expect_refresh: bool
) -> None:
    creds, _ = make_creds(social_file("2026-01-02T03:14:05.000Z"), refresh_ahead_s=ahead_s)
    await creds.current()  # 10 minutes left
    assert upstream.refreshes == (1 if expect_refresh else 0)


async def test_expiry_crossed_later_triggers_refresh(
    make_creds: MakeCreds, upstream: FakeKiroAuth
) -> None:
    clock = Clock()
    creds, _ = make_creds(social_file("2026-01-02T04:00:00.000Z"), clock=clock)
    assert (await creds.current()).access_token == "aoa-0"
    clock.advance(3600)
    assert (await creds.current()).access_token == "aoa-1"


async def test_short_lived_tokens_are_not_refreshed_on_every_call(
    make_creds: MakeCreds, upstream: FakeKiroAuth
) -> None:
    upstream.ttl = 120  # shorter than refresh_ahead_s (300): refresh at half-life instead
    clock = Clock()
    creds, _ = make_creds(social_file("2026-01-02T03:00:00.000Z"), clock=clock)
    assert (await creds.current()).access_token == "aoa-1"
    clock.advance(30)
    assert (await creds.current()).access_token == "aoa-1"
    clock.advance(31)  # 59 s left of 120
    assert (await creds.current()).access_token == "aoa-2"
    assert upstream.refreshes == 2


async def test_missing_profile_arn_and_refresh_token_are_kept(
    make_creds: MakeCreds, upstream: FakeKiroAuth
) -> None:
    upstream.profile_arn = None
    creds, path = make_creds(social_file())
    auth = await creds.refresh()
    assert auth.profile_arn == PROFILE
    assert on_disk(path)["profileArn"] == PROFILE
    assert on_disk(path)["refreshToken"] == "aor-0"


async def test_rotated_refresh_token_is_persisted_and_used_next(
    make_creds: MakeCreds, upstream: FakeKiroAuth
) -> None:
    upstream.rotate = True
    creds, path = make_creds(social_file())
    await creds.refresh()
    assert on_disk(path)["refreshToken"] == "aor-1"
    await creds.refresh()  # the fake refuses aor-0 now: this only works with aor-1
    assert on_disk(path)["refreshToken"] == "aor-2"
    assert creds.refresh_count == 2


# -- IdC ---------------------------------------------------------------------------------------


async def test_idc_refresh_uses_companion_and_oidc(
    make_creds: MakeCreds, upstream: FakeKiroAuth, tmp_path: Path
) -> None:
    upstream.rotate = True
    creds, path = make_creds(idc_file())
    reg = {"clientId": "cid-1", "clientSecret": "csec-1", "expiresAt": "2026-03-01T00:00:00.000Z"}
    (path.parent / f"{HASH}.json").write_text(json.dumps(reg))
    auth = await creds.current()
    assert (auth.access_token, auth.auth_method, auth.profile_arn) == ("aoa-1", "idc", None)
    host, route, body = upstream.requests[0]
    assert (host, route) == ("oidc.test", "/token")
    # no profile ARN: then ListAvailableProfiles (refused by this fake, so none)
    assert upstream.requests[1][:2] == ("q.us-east-1.amazonaws.com", "/")
    assert body == {
        "clientId": "cid-1",
        "clientSecret": "csec-1",
        "grantType": "refresh_token",
        "refreshToken": "aor-0",
    }
    saved = on_disk(path)
    assert saved == {
        **idc_file("2026-01-02T04:04:05.678Z"),
        "accessToken": "aoa-1",
        "refreshToken": "aor-1",
    }


async def test_idc_default_oidc_host_comes_from_the_token_region(
    make_creds: MakeCreds, upstream: FakeKiroAuth
) -> None:
    creds, path = make_creds(idc_file(region="eu-central-1"), kiro_oidc_base=None)
    (path.parent / "some-registration.json").write_text(
        json.dumps({"clientId": "cid-1", "clientSecret": "csec-1"})
    )  # not the named companion: found by scanning
    await creds.refresh()
    assert upstream.requests[0][:2] == ("oidc.eu-central-1.amazonaws.com", "/token")
    assert upstream.requests[1][:2] == ("q.eu-central-1.amazonaws.com", "/")  # its profiles


async def test_idc_without_registration_is_an_auth_error(
    make_creds: MakeCreds, upstream: FakeKiroAuth
) -> None:
    creds, path = make_creds(idc_file())
    before = path.read_bytes()
    with pytest.raises(GatewayError) as caught:
        await creds.refresh()
    assert caught.value.kind is ErrorKind.UPSTREAM_AUTH
    assert "clientSecret" in caught.value.message
    assert upstream.requests == [] and path.read_bytes() == before


# -- single flight -----------------------------------------------------------------------------


async def test_fifty_concurrent_callers_share_one_refresh(
    make_creds: MakeCreds, upstream: FakeKiroAuth
) -> None:
    upstream.rotate = True  # a second refresh with the old refresh token would be refused
    creds, _ = make_creds(social_file())
    calls = [creds.current() for _ in range(25)] + [creds.refresh(stale="aoa-0") for _ in range(25)]
    results = await asyncio.gather(*calls)
    assert {r.access_token for r in results} == {"aoa-1"}
    assert upstream.refreshes == 1 and len(upstream.requests) == 1
    # a latecomer holding the replaced token gets the new one without another refresh
    assert (await creds.refresh(stale="aoa-0")).access_token == "aoa-1"
    assert upstream.refreshes == 1


async def test_forced_refreshes_in_sequence_each_reach_upstream(
    make_creds: MakeCreds, upstream: FakeKiroAuth
) -> None:
    creds, _ = make_creds(social_file("2026-01-02T05:00:00.000Z"))
    first = await creds.refresh(stale="aoa-0")
    second = await creds.refresh(stale=first.access_token)
    assert (first.access_token, second.access_token) == ("aoa-1", "aoa-2")
    assert upstream.refreshes == 2


async def test_cancelled_caller_does_not_abort_the_shared_refresh(
    make_creds: MakeCreds, upstream: FakeKiroAuth
) -> None:
    upstream.rotate = True
    upstream.delay_s = 0.05
    creds, path = make_creds(social_file())
    first = asyncio.create_task(creds.current())
    await asyncio.sleep(0)
    second = asyncio.create_task(creds.current())
    await asyncio.sleep(0)
    first.cancel()
    assert (await second).access_token == "aoa-1"
    assert first.cancelled()
    assert upstream.refreshes == 1
    assert on_disk(path)["refreshToken"] == "aor-1"


# -- failures ----------------------------------------------------------------------------------

FAILURES = [
    ("invalid-grant", {"fail": (400, {"error": "invalid_grant"})}, ErrorKind.UPSTREAM_AUTH, False),
    ("unauthorized", {"fail": (401, {"message": "expired"})}, ErrorKind.UPSTREAM_AUTH, False),
    (
        "server-error",
        {"fail": (502, {"message": "bad gateway"})},
        ErrorKind.UPSTREAM_UNAVAILABLE,
        True,
    ),
    ("network-down", {"network_down": True}, ErrorKind.UPSTREAM_UNAVAILABLE, True),
    ("wrong-refresh-token", {"valid_refresh": {"aor-other"}}, ErrorKind.UPSTREAM_AUTH, False),
]


@pytest.mark.parametrize(
    ("behaviour", "kind", "retryable"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES]
)
async def test_failed_refresh_maps_error_and_leaves_file_byte_identical(
    make_creds: MakeCreds,
    upstream: FakeKiroAuth,
    behaviour: dict[str, Any],
    kind: ErrorKind,
    retryable: bool,
) -> None:
    for key, value in behaviour.items():
        setattr(upstream, key, value)
    creds, path = make_creds(social_file("2026-01-02T03:00:00.000Z"))  # already expired
    before = path.read_bytes()
    with pytest.raises(GatewayError) as caught:
        await creds.current()
    assert caught.value.kind is kind and caught.value.retryable is retryable
    assert "aor-0" not in caught.value.message and "aoa-0" not in caught.value.message
    if kind is ErrorKind.UPSTREAM_AUTH:
        assert "Sign in to Kiro again" in caught.value.message
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    status = creds.status()
    assert status["last_refresh_ok"] is False and status["last_error"]
    assert status["refresh_failures"] == 1 and creds.refresh_count == 0


async def test_failure_backs_off_then_the_next_request_tries_again(
    make_creds: MakeCreds, upstream: FakeKiroAuth
) -> None:
    clock = Clock()
    upstream.network_down = True
    creds, _ = make_creds(social_file("2026-01-02T03:00:00.000Z"), clock=clock)
    for _ in range(3):
        with pytest.raises(GatewayError):
            await creds.current()
    assert len(upstream.requests) == 1  # the burst did not become a refresh storm
    upstream.network_down = False
    clock.advance(6)
    assert (await creds.current()).access_token == "aoa-1"
    assert len(upstream.requests) == 2
    assert creds.status()["last_refresh_ok"] is True and creds.status()["last_error"] is None


async def test_failed_refresh_ahead_keeps_serving_the_still_valid_token(
    make_creds: MakeCreds, upstream: FakeKiroAuth
) -> None:
    upstream.fail = (503, {"message": "down"})
    creds, _ = make_creds(social_file())  # 2 minutes left
    assert (await creds.current()).access_token == "aoa-0"


# -- read-only token file ----------------------------------------------------------------------


def _make_read_only(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path.chmod(0o444)
    path.parent.chmod(0o555)
    probe = path.parent / ".write-probe"
    try:
        probe.write_text("x")
    except PermissionError:
        return  # permission bits are enforced: a real read-only directory
    probe.unlink()

    def refuse(src: object, dst: object) -> None:  # root ignores the bits: the OS says no
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(tokenfile.os, "replace", refuse)


async def test_read_only_file_keeps_tokens_in_memory_and_warns_once(
    make_creds: MakeCreds,
    upstream: FakeKiroAuth,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    upstream.rotate = True
    creds, path = make_creds(social_file())
    before = path.read_bytes()
    _make_read_only(path, monkeypatch)
    try:
        with caplog.at_level(logging.WARNING, logger="ki2api"):
            tokens = [(await creds.refresh()).access_token for _ in range(3)]
    finally:
        path.parent.chmod(0o755)
    assert tokens == ["aoa-1", "aoa-2", "aoa-3"]  # rotation kept working from memory
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    warnings = [r for r in caplog.records if "cannot save" in r.getMessage()]
    assert len(warnings) == 1
    assert "aor-" not in caplog.text and "aoa-" not in caplog.text
    assert creds.status()["read_only"] is True


# -- the Kiro IDE refreshed the file itself ----------------------------------------------------


def _rewrite(path: Path, data: dict[str, Any]) -> None:
    old = path.stat().st_mtime_ns
    path.write_text(json.dumps(data))
    os.utime(path, ns=(old + 10**9, old + 10**9))


async def test_token_refreshed_on_disk_is_adopted_instead_of_refreshing(
    make_creds: MakeCreds, upstream: FakeKiroAuth
) -> None:
    creds, path = make_creds(social_file())
    assert (await creds.refresh()).access_token == "aoa-1"
    _rewrite(
        path, social_file("2026-01-02T06:00:00.000Z", accessToken="aoa-ide", refreshToken="aor-ide")
    )
    auth = await creds.refresh(stale="aoa-1")  # the upstream refused aoa-1
    assert auth.access_token == "aoa-ide"
    assert upstream.refreshes == 1


async def test_expiring_token_on_disk_gives_its_refresh_token(
    make_creds: MakeCreds, upstream: FakeKiroAuth
) -> None:
    creds, path = make_creds(social_file("2026-01-02T03:05:05.000Z"))
    await creds.load()
    assert creds.status()["has_access_token"] is True  # loaded, not refreshed yet
    upstream.valid_refresh = {"aor-ide"}  # the IDE refreshed and rotated meanwhile
    ide = social_file("2026-01-02T03:07:05.000Z", accessToken="aoa-ide", refreshToken="aor-ide")
    _rewrite(path, ide)
    assert (await creds.current()).access_token == "aoa-1"
    assert upstream.requests[-1][2] == {"refreshToken": "aor-ide"}
    assert on_disk(path)["accessToken"] == "aoa-1"
    assert on_disk(path)["refreshToken"] == "aor-ide"


async def test_older_token_on_disk_is_not_adopted(
    make_creds: MakeCreds, upstream: FakeKiroAuth
) -> None:
    creds, path = make_creds(social_file("2026-01-02T05:00:00.000Z"))
    await creds.current()
    _rewrite(path, social_file("2026-01-02T04:00:00.000Z", accessToken="aoa-older"))
    assert (await creds.refresh(stale="aoa-0")).access_token == "aoa-1"


# -- environment tokens ------------------------------------------------------------------------

ENV = CredentialSource("env", None, "environment")


async def test_env_refresh_token_alone_refreshes_on_first_use(
    tmp_path: Path, http: httpx.AsyncClient, upstream: FakeKiroAuth
) -> None:
    settings = base_settings(tmp_path, kiro_refresh_token="aor-0")
    creds = KiroCredentials(ENV, settings, http, clock=Clock())
    auth = await creds.current()
    assert (auth.access_token, auth.auth_method) == ("aoa-1", "social")
    assert upstream.requests[0][:2] == ("auth.test", "/refreshToken")


async def test_env_access_token_alone_works_until_refused(
    tmp_path: Path, http: httpx.AsyncClient, upstream: FakeKiroAuth
) -> None:
    settings = base_settings(tmp_path, kiro_access_token="aoa-env", kiro_profile_arn=PROFILE)
    creds = KiroCredentials(ENV, settings, http, clock=Clock(), account_id="solo")
    auth = await creds.current()
    assert (auth.account_id, auth.access_token, auth.profile_arn) == ("solo", "aoa-env", PROFILE)
    with pytest.raises(GatewayError) as caught:
        await creds.refresh(stale="aoa-env")
    assert caught.value.kind is ErrorKind.UPSTREAM_AUTH
    assert "no refresh token" in caught.value.message
    assert upstream.requests == []


# -- no secrets in views -----------------------------------------------------------------------


async def test_status_and_reprs_carry_no_secret(make_creds: MakeCreds) -> None:
    creds, path = make_creds(social_file())
    auth = await creds.current()
    status = creds.status()
    assert status["auth_method"] == "social" and status["refresh_count"] == 1
    assert status["seconds_left"] == 3600.0
    assert status["expires_at"] == (T0 + timedelta(seconds=3600)).isoformat()
    text = json.dumps(status) + repr(creds) + repr(auth) + str(auth)
    for secret in ("aoa-", "aor-"):
        assert secret not in text


async def test_unreadable_token_file_is_no_credentials(make_creds: MakeCreds) -> None:
    creds, path = make_creds(social_file())
    path.write_text("{garbage")
    with pytest.raises(GatewayError) as caught:
        await creds.current()
    assert caught.value.kind is ErrorKind.NO_CREDENTIALS
    assert str(path) in caught.value.message
    assert "not valid JSON" in str(creds.status()["last_error"])


class GatedStore:
    """A real SQLite store whose n-th `load_tokens` waits for `gates[n]` before reading, so two
    callers' reads can be put in a chosen order (the interleaving of concurrent requests)."""

    def __init__(self, inner: Any, gates: dict[int, asyncio.Event]) -> None:
        self.inner = inner
        self.gates = gates
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def load_tokens(self, account_id: str) -> Any:
        self.calls += 1
        gate = self.gates.get(self.calls)
        if gate is not None:
            await gate.wait()
        return await self.inner.load_tokens(account_id)


async def _calls_reach(store: GatedStore, n: int) -> None:
    for _ in range(1000):
        if store.calls >= n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{store.calls} load_tokens calls, not {n}")


async def test_a_token_another_request_read_in_first_is_adopted_not_refreshed_again(
    tmp_path: Path, http: httpx.AsyncClient, upstream: FakeKiroAuth
) -> None:
    """Two first requests of a replica load an expired token from the store together; another
    replica's refresh lands in between: the second request reads it in, and the refresh the first
    request began adopts it too (it once saw "no change since the last read" and refreshed
    again: two refreshes of one account at Kiro)."""
    store = SQLiteStore.open(tmp_path / "state.db")
    await store.upsert_account(AccountRecord("a", "store", "a", "social", "1" * 64))
    await store.save_tokens("a", social_file("2026-01-02T03:00:00.000Z"), expected_version=None)
    gates = {n: asyncio.Event() for n in (1, 2, 3)}
    gated = GatedStore(store, gates)
    home = StoreTokenHome(gated, "a", default_region="us-east-1")  # type: ignore[arg-type]
    source = CredentialSource("store", None, "a")
    creds = KiroCredentials(
        source, base_settings(tmp_path), http, clock=Clock(), account_id="a", home=home, locks=store
    )
    first, second = asyncio.create_task(creds.current()), asyncio.create_task(creds.current())
    await _calls_reach(gated, 2)  # both requests are loading
    gates[1].set()  # the first reads the expired token and begins a refresh: it reads again
    await _calls_reach(gated, 3)
    newer = social_file("2026-01-02T06:00:00.000Z", accessToken="aoa-r", refreshToken="aor-r")
    assert await store.save_tokens("a", newer, expected_version=1) == 2  # another replica
    upstream.valid_refresh.add("aor-r")
    gates[2].set()
    assert (await second).access_token == "aoa-r"
    gates[3].set()
    assert (await first).access_token == "aoa-r"
    assert upstream.refreshes == 0
    await store.aclose()
