"""The web console's server side (issue 15 item 2) through the real HTTP stack.

An httpx client signs in like the page does (cookie + CSRF header) against a gateway on uvicorn
in front of the emulator; traffic comes from the official openai SDK. One gateway serves the
module's read-mostly tests; the console-off page and the login throttle get their own.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from ki2api.server.app import create_app
from ki2api.server.http1 import protocol_for
from tests.conftest import Gateway, gateway_settings, make_account, set_behaviour
from tests.support.polling import until
from tests.support.servers import serve_in_thread

ADMIN = "console-admin-" + "k3y" * 6
MODEL = "claude-sonnet-4.5"
HI = [{"role": "user", "content": "hi"}]
CSP = "default-src 'self'; script-src 'self'"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def logs() -> Iterator[_Records]:
    """Every line the gateway logs while this module runs (DEBUG and up)."""
    records = _Records()
    names = ("", "ki2api", "uvicorn", "uvicorn.error", "uvicorn.access")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(records)
    logging.getLogger("ki2api").setLevel(logging.DEBUG)
    yield records
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(records)
        lg.setLevel(level)


@pytest.fixture(scope="module")
def gw(
    emulator_url: str, tmp_path_factory: pytest.TempPathFactory, logs: _Records
) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("console")
    acct = make_account(emulator_url, tmp)
    settings = gateway_settings(emulator_url, acct, tmp, admin_key=ADMIN)
    with serve_in_thread(create_app(settings), http=protocol_for(settings)) as url:
        gateway = Gateway(url, settings, acct, emulator_url)
        yield gateway
        gateway.close_clients()


class Console:
    """The page's side: a cookie jar and the CSRF token kept in memory."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)
        self.csrf = ""

    def login(self, key: str = ADMIN, **headers: str) -> httpx.Response:
        r = self.http.post("/ui/api/login", json={"admin_key": key}, headers=headers)
        if r.status_code == 200:
            self.csrf = r.json()["csrf"]
        return r

    def get(self, path: str, **params: Any) -> Any:
        r = self.http.get(f"/ui/api/{path}", params=params)
        assert r.status_code == 200, r.text
        return r.json()

    def post(self, path: str, body: Any = None, **headers: str) -> httpx.Response:
        sent = {"x-ki2api-csrf": self.csrf, **headers}
        return self.http.post(f"/ui/api/{path}", json=body, headers=sent)


@pytest.fixture
def console(gw: Gateway) -> Iterator[Console]:
    c = Console(gw.url)
    assert c.login().status_code == 200
    yield c
    c.http.close()


def error_code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


# on and off -------------------------------------------------------------------------------------


def test_without_admin_key_the_console_says_it_is_off(gateway_factory: Any) -> None:
    gw = gateway_factory()
    with httpx.Client(base_url=gw.url) as http:
        for path in ("/", "/ui", "/ui/", "/ui/overview", "/ui/keys"):
            r = http.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert "console is off" in r.text and "ADMIN_KEY" in r.text and "控制台" in r.text
            assert r.headers["content-security-policy"].startswith(CSP)
        for path in ("/ui/api/overview", "/ui/api/login", "/ui/api/nothing"):
            r = http.post(path, json={}) if path.endswith("login") else http.get(path)
            assert (r.status_code, error_code(r)) == (404, "console_off")
        other = http.get("/nothing-here")  # other unknown paths: the JSON 404 as before
        assert other.status_code == 404 and other.json()["error"]["message"]


def test_pages_redirect_and_carry_the_security_headers(gw: Gateway) -> None:
    with httpx.Client(base_url=gw.url) as http:
        for path in ("/", "/ui", "/ui/"):
            r = http.get(path)
            assert (r.status_code, r.headers["location"]) == (302, "/ui/overview")
        for page in ("overview", "accounts", "keys", "requests", "settings"):
            r = http.get(f"/ui/{page}")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert r.headers["content-security-policy"].startswith(CSP)
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["referrer-policy"] == "no-referrer"
            assert r.headers["x-content-type-options"] == "nosniff"
        asset = http.get("/ui/static/index.html")
        assert asset.status_code == 200
        assert asset.headers["content-security-policy"].startswith(CSP)
        for bad in ("/ui/static/nope.js", "/ui/static/..%2Fconsole_api.py", "/ui/nowhere"):
            assert http.get(bad).status_code == 404


# sign-in ----------------------------------------------------------------------------------------


def test_sign_in_cookie_session_and_sign_out(gw: Gateway) -> None:
    c = Console(gw.url)
    assert error_code(c.http.get("/ui/api/session")) == "signed_out"
    assert error_code(c.http.get("/ui/api/overview")) == "signed_out"
    wrong = c.login("not-the-key")
    assert (wrong.status_code, error_code(wrong)) == (401, "bad_admin_key")
    assert "set-cookie" not in wrong.headers
    r = c.login()
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"csrf", "expires_at", "version"} and body["expires_at"] > time.time()
    cookie = r.headers["set-cookie"]
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/ui", "max-age=43200"} <= flags
    assert "secure" not in flags and ADMIN not in cookie
    assert c.get("session")["csrf"] == body["csrf"]
    tls = Console(gw.url)
    behind_tls = tls.login(**{"x-forwarded-proto": "https"})
    tls.http.close()
    assert "secure" in {p.strip().lower() for p in behind_tls.headers["set-cookie"].split(";")}
    assert c.post("logout").status_code == 204
    assert error_code(c.http.get("/ui/api/session")) == "signed_out"
    c.http.close()


def test_failed_sign_ins_are_throttled(gateway_factory: Any) -> None:
    gw = gateway_factory(admin_key=ADMIN)
    c = Console(gw.url)
    for _ in range(5):
        assert c.login("wrong").status_code == 401
    r = c.login()  # even the right key waits now
    assert (r.status_code, error_code(r)) == (429, "throttled")
    assert 1 <= int(r.headers["retry-after"]) <= 60
    c.http.close()


def test_state_changes_need_the_csrf_header_and_the_same_origin(
    gw: Gateway, console: Console
) -> None:
    body = {"name": "csrf-probe"}
    refusals = [
        ({"x-ki2api-csrf": ""}, "csrf"),
        ({"x-ki2api-csrf": "forged"}, "csrf"),
        ({"origin": "http://evil.example"}, "origin"),
        ({"sec-fetch-site": "cross-site"}, "origin"),
    ]
    for headers, code in refusals:
        r = console.post("keys", body, **headers)
        assert (r.status_code, error_code(r)) == (403, code), headers
    ok = console.post("keys", body, origin=gw.url, **{"sec-fetch-site": "same-origin"})
    assert ok.status_code == 201
    foreign = Console(gw.url)
    login = foreign.login(origin="http://evil.example")
    assert (login.status_code, error_code(login)) == (403, "origin")
    anonymous = foreign.http.post("/ui/api/keys", json=body, headers={"x-ki2api-csrf": "x"})
    assert (anonymous.status_code, error_code(anonymous)) == (401, "signed_out")
    foreign.http.close()


# the API's shapes after real traffic --------------------------------------------------------------


def _traffic(gw: Gateway) -> None:
    client = gw.openai()
    assert client.chat.completions.create(model=MODEL, messages=HI).choices  # type: ignore[arg-type]
    stream = client.chat.completions.create(model=MODEL, messages=HI, stream=True)  # type: ignore[arg-type]
    assert [chunk for chunk in stream]


def test_every_route_answers_its_documented_shape_after_traffic(
    gw: Gateway, console: Console
) -> None:
    before = console.get("overview", window_s=3600, bucket_s=60)["totals"]["requests"]
    _traffic(gw)

    def moved() -> Any:
        found = console.get("overview", window_s=3600, bucket_s=60)
        return found if found["totals"]["requests"] >= before + 2 else None

    overview = until(moved)
    assert overview, "the overview did not count the two requests"
    assert set(overview) == {"now", "window_s", "bucket_s", "totals", "series", "accounts"}
    assert len(overview["series"]) == 60 and overview["series"][-1]["requests"] >= 1
    assert overview["totals"]["ttft_p50_ms"] > 0 and overview["totals"]["ttft_p95_ms"] > 0
    assert set(overview["accounts"]) == {"total", "usable", "resting", "disabled"}
    clamped = console.get("overview", window_s=10**9, bucket_s=1)
    assert clamped["window_s"] == 2_592_000 and len(clamped["series"]) <= 500
    bad = console.http.get("/ui/api/overview", params={"window_s": "soon"})
    assert (bad.status_code, error_code(bad)) == (400, "invalid")

    every = console.get("requests", limit=500)["requests"]  # the console's own calls: no rows
    assert every and all(r["endpoint"].startswith("/v1/") for r in every)
    rows = console.get("requests", limit=2)["requests"]
    assert len(rows) == 2 and rows[0]["at"] >= rows[1]["at"]  # newest first
    assert {r["stream"] for r in rows} == {True, False}
    for r in rows:
        assert r["status"] == 200 and r["outcome"] == "ok" and r["ttft_ms"] > 0
        assert r["ttft_ms"] <= r["latency_ms"] and r["key"] == "key-1"
        assert r["endpoint"] == "/v1/chat/completions" and r["model"] == MODEL

    accounts = console.get("accounts")["accounts"]
    main = next(a for a in accounts if a["id"] == "default")
    assert main["state"] == "ok" and main["region"] == "us-east-1"
    assert main["profile_arn"] and main["models"] and main["login"]["has_refresh_token"] is True
    assert {"quota", "cooldown_s", "inflight", "max_inflight", "warning", "network"} <= set(main)
    assert gw.account.data["token_file"]["refreshToken"] not in json.dumps(accounts)

    settings = {s["name"]: s for s in console.get("settings")["settings"]}
    assert settings["ADMIN_KEY"] == {**settings["ADMIN_KEY"], "value": "set", "secret": True}
    assert ADMIN not in json.dumps(settings) and "test-key-123" not in json.dumps(settings)
    assert settings["PORT"]["secret"] is False
    assert isinstance(console.get("keys")["keys"], list)


# client keys -------------------------------------------------------------------------------------


def test_a_key_made_in_the_console_works_until_it_is_revoked(gw: Gateway, console: Console) -> None:
    made = console.post("keys", {"name": "dana", "rpm": 50, "models": "claude-*"})
    assert made.status_code == 201
    key, record = made.json()["key"], made.json()["record"]
    assert key.startswith("sk-ki2api-") and record["hint"].endswith(key[-4:])
    assert record["limits"]["rpm"] == 50 and record["limits"]["models"] == ["claude-*"]
    client = gw.openai(api_key=key)
    assert client.chat.completions.create(model=MODEL, messages=HI).choices  # type: ignore[arg-type]

    def counted() -> Any:
        views = {k["name"]: k for k in console.get("keys")["keys"]}
        return views["dana"]["usage_24h"]["requests"] == 1 and views["dana"]

    view = until(counted)
    assert view and view["state"] == "active" and key not in json.dumps(view)
    usage = console.get("keys/dana/usage", window_s=600, bucket_s=60)
    assert usage["totals"]["requests"] == 1 and len(usage["series"]) == 10

    revoked = console.post("keys/dana/revoke")
    assert revoked.status_code == 200 and revoked.json()["record"]["state"] == "revoked"
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=MODEL, messages=HI)  # type: ignore[arg-type]
    again = console.post("keys/dana/enable")
    assert (again.status_code, error_code(again)) == (400, "invalid")  # revoked for good


def test_key_actions_and_refusals(console: Console) -> None:
    assert console.post("keys", {"name": "erin", "expires": "2099-01-31"}).status_code == 201
    taken = console.post("keys", {"name": "erin"})
    assert (taken.status_code, error_code(taken)) == (409, "exists")
    for body in (
        {"name": "bad name!"},
        {"name": "key-1"},  # reserved: the usage log's name of API_KEY
        {"name": "f1", "rpm": -1},
        {"name": "f2", "tpm": "many"},
        {"name": "f3", "expires": "next tuesday"},
        {},
    ):
        r = console.post("keys", body)
        assert (r.status_code, error_code(r)) == (400, "invalid"), body
    not_json = console.http.post(
        "/ui/api/keys", content=b"{", headers={"x-ki2api-csrf": console.csrf}
    )
    assert (not_json.status_code, error_code(not_json)) == (400, "invalid")
    assert console.post("keys/erin/disable").json()["record"]["state"] == "disabled"
    assert console.post("keys/erin/enable").json()["record"]["state"] == "active"
    rotated = console.post("keys/erin/rotate").json()
    assert rotated["key"].startswith("sk-ki2api-") and rotated["record"]["name"] == "erin"
    assert error_code(console.post("keys/nobody/revoke")) == "not_found"
    assert error_code(console.http.get("/ui/api/keys/nobody/usage")) == "not_found"


# accounts ----------------------------------------------------------------------------------------


def test_an_account_pasted_as_token_json_can_be_disabled_enabled_and_refreshed(
    gw: Gateway, console: Console, tmp_path: Path
) -> None:
    token = make_account(gw.emulator_url, tmp_path).data["token_file"]
    text = json.dumps(token)
    added = console.post("accounts", {"token_json": text, "id": "pasted"})
    assert added.status_code == 201, added.text
    assert added.json()["account"]["id"] == "pasted" and added.json()["account"]["state"] == "ok"
    assert token["refreshToken"] not in added.text and token["accessToken"] not in added.text
    same = console.post("accounts", {"token_json": text})
    assert (same.status_code, error_code(same)) == (409, "exists")
    for body in (
        {"token_json": "{not json"},
        {"token_json": json.dumps({"accessToken": "x"})},  # no refresh token
        {"token_json": json.dumps({**token, "refreshToken": "other"}), "id": "pasted"},  # taken
        {"token_json": json.dumps({**token, "refreshToken": "other"}), "id": "Bad Id"},
        {"token_json": ""},
    ):
        r = console.post("accounts", body)
        assert (r.status_code, error_code(r)) == (400, "invalid"), body

    off = console.post("accounts/pasted/disable").json()["account"]
    assert off["state"] == "disabled" and off["enabled"] is False
    listed = {a["id"]: a for a in console.get("accounts")["accounts"]}
    assert listed["pasted"]["state"] == "disabled"
    assert console.post("accounts/pasted/enable").json()["account"]["state"] == "ok"
    count = listed["pasted"]["login"]["refresh_count"]
    refreshed = console.post("accounts/pasted/refresh")
    assert refreshed.status_code == 200
    login = refreshed.json()["account"]["login"]
    assert login["refresh_count"] == count + 1 and login["last_refresh_ok"] is True
    assert error_code(console.post("accounts/nobody/refresh")) == "not_found"
    pasted = make_account(gw.emulator_url, tmp_path)
    set_behaviour(gw.emulator_url, pasted.id, refresh_fails=True)
    token_json = json.dumps(pasted.data["token_file"])
    assert console.post("accounts", {"token_json": token_json, "id": "broken"}).status_code == 201
    failed = console.post("accounts/broken/refresh")  # a clear 400, never a 500
    assert (failed.status_code, error_code(failed)) == (400, "invalid")
    assert "refresh" in failed.json()["error"]["message"]
    assert pasted.data["token_file"]["refreshToken"] not in failed.text
    assert error_code(console.post("accounts/pasted/explode")) == "not_found"


# secrets ------------------------------------------------------------------------------------------


def test_the_admin_key_and_cookies_never_reach_the_log(gw: Gateway, logs: _Records) -> None:
    c = Console(gw.url)
    c.login(ADMIN[:-1])  # a near miss
    assert c.login().status_code == 200
    cookie = c.http.cookies["ki2api_console"]
    c.get("overview")
    c.http.get("/ui/api/nothing")
    c.http.close()
    text = "\n".join(logs.lines)
    assert ADMIN not in text and ADMIN[:-1] not in text and cookie not in text
