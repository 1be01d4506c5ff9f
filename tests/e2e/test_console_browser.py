"""The web console (issue 15 item 2) in a real browser: Debian's Chromium driven by Playwright.

One gateway with ADMIN_KEY and one account on the emulator (which reports a quota for it), one
headless Chromium for the module. The operator's day: sign in with the admin key, read the
overview's tiles and plots and the account's quota bar, create a client key with an rpm limit
(shown once), use it from the official openai SDK, watch the request reach the requests page and
the plots, revoke the key (a confirm dialog) and see the SDK refused, read the settings, switch to
Chinese, sign out, and be refused a wrong admin key. All the while the page logs no error and
asks no host but the gateway. A full-page screenshot of each page goes to
`$KI2API_ARTIFACTS/console/` (else `test-artifacts/console/` at the repo's root).

Without Chromium the test is skipped with how to install it (`apt-get install chromium`; .ci/run
does it), unless KI2API_REQUIRE_BROWSER=1 (CI), where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import openai
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Locator,
    Page,
    Playwright,
    Request,
    expect,
    sync_playwright,
)

from ki2api.server.app import create_app
from ki2api.server.client_keys import CACHE_S
from ki2api.server.http1 import protocol_for
from tests.conftest import Gateway, gateway_settings, make_account
from tests.support.polling import until
from tests.support.servers import serve_in_thread

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "console-admin-key-for-the-browser-test"
MODEL = "claude-sonnet-4.5"
QUOTA_LIMIT = 500
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Chrome logs every 4xx answer to a fetch as a console error; these are the answers the flow asks
# for (no session yet before sign-in; the taken key name; the wrong admin key), nothing else.
EXPECTED_4XX = {
    ("401", "/ui/api/session"),
    ("409", "/ui/api/keys"),
    ("401", "/ui/api/login"),
}


def chromium_path() -> str:
    """Debian's Chromium, or a skip (under KI2API_REQUIRE_BROWSER=1 a failure) saying how."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    why = (
        "the console's browser test needs Debian's Chromium: as root, "
        "`apt-get install chromium` (.ci/run installs it)"
    )
    if os.environ.get("KI2API_REQUIRE_BROWSER") == "1":
        pytest.fail(f"KI2API_REQUIRE_BROWSER=1 but {why}")
    pytest.skip(why)


def artifacts_dir() -> Path:
    base = os.environ.get("KI2API_ARTIFACTS")
    where = (Path(base) if base else ROOT / "test-artifacts") / "console"
    where.mkdir(parents=True, exist_ok=True)
    return where


@dataclass
class Console:
    """The page, what it logged and asked for, and where its screenshots go."""

    page: Page
    gw: Gateway
    shots: Path
    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    taken: list[Path] = field(default_factory=list)

    def by(self, testid: str) -> Locator:
        return self.page.get_by_test_id(testid)

    def shot(self, name: str) -> None:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)

    def go(self, page: str) -> None:
        self.by(f"nav-{page}").click()
        expect(self.page).to_have_url(f"{self.gw.url}/ui/{page}")


@pytest.fixture(scope="module")
def console_gateway(
    emulator_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("console")
    account = make_account(emulator_url, root, usage_limit=QUOTA_LIMIT)
    # quota_poll_s: the first getUsageLimits a second after start, so the quota bar has numbers
    settings = gateway_settings(emulator_url, account, root, admin_key=ADMIN_KEY, quota_poll_s=1.0)
    with serve_in_thread(create_app(settings), http=protocol_for(settings)) as url:
        gw = Gateway(url, settings, account, emulator_url)
        yield gw
        gw.close_clients()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as pw:
        b = launch(pw, executable)
        yield b
        b.close()


def launch(pw: Playwright, executable: str) -> Browser:
    return pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)


@pytest.fixture
def console(browser: Browser, console_gateway: Gateway) -> Iterator[Console]:
    context = browser.new_context(
        viewport={"width": 1360, "height": 860}, locale="en-US", color_scheme="light"
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    c = Console(page, console_gateway, artifacts_dir())
    gateway_host = urlsplit(console_gateway.url).netloc

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type != "error":
            return
        where = urlsplit(msg.location.get("url", "")).path
        status = re.search(r"status of (\d{3})", msg.text)
        if status and (status.group(1), where) in EXPECTED_4XX:
            return
        c.errors.append(f"{msg.text} at {msg.location}")

    def on_request(req: Request) -> None:
        url = urlsplit(req.url)
        if url.scheme in ("http", "https", "ws", "wss") and url.netloc != gateway_host:
            c.foreign.append(req.url)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: c.errors.append(f"uncaught: {exc}"))
    page.on("request", on_request)
    expect.set_options(timeout=15_000)
    yield c
    context.close()


def refused(gw: Gateway, key: str) -> openai.AuthenticationError | None:
    try:
        gw.openai(api_key=key).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "after the revoke"}]
        )
    except openai.AuthenticationError as exc:
        return exc
    return None


def sign_in(c: Console) -> None:
    c.page.goto(f"{c.gw.url}/")
    expect(c.page).to_have_url(f"{c.gw.url}/ui/overview")  # `/` redirects to the console
    expect(c.by("login-key")).to_be_visible()
    expect(c.by("login-key")).to_have_attribute("type", "password")
    c.shot("signin")
    c.by("login-key").fill(ADMIN_KEY)
    c.by("login-submit").click()
    expect(c.by("nav-overview")).to_be_visible()
    expect(c.by("tile-requests")).to_contain_text("Requests")
    expect(c.by("plot-requests").locator("svg")).to_be_visible()
    expect(c.by("plot-requests")).to_have_attribute("data-total", "0")  # a fresh gateway
    assert ADMIN_KEY not in c.page.url


def account_quota(c: Console) -> None:
    c.go("accounts")
    rows = c.by("account-row")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".badge")).to_have_text("ok")
    bar = rows.first.get_by_test_id("quota-bar")  # after the first getUsageLimits
    expect(bar).to_contain_text(f"/ {QUOTA_LIMIT} used")
    expect(bar).to_contain_text("left")
    c.shot("accounts")


def create_key(c: Console) -> str:
    c.go("keys")
    c.by("key-create-name").fill("browser-key")
    c.by("key-create-rpm").fill("30")
    c.by("key-create-submit").click()
    shown = c.by("new-key")
    expect(shown).to_have_text(re.compile(r"^sk-ki2api-\S{20,}$"))
    key = shown.inner_text().strip()
    row = c.page.locator('[data-testid="key-row"][data-key-name="browser-key"]')
    expect(row).to_contain_text("rpm 30")
    expect(row).to_contain_text("active")
    c.shot("keys")
    c.page.get_by_role("button", name="Done").click()  # shown once: gone from the page after
    expect(shown).to_be_hidden()
    assert key not in c.page.content()
    stored = c.page.evaluate("() => JSON.stringify([{...localStorage}, {...sessionStorage}])")
    assert key not in stored and ADMIN_KEY not in stored
    c.by("key-create-name").fill("browser-key")  # taken: the API's refusal shows in the banner
    c.by("key-create-submit").click()
    expect(c.by("error-banner")).to_contain_text("browser-key")
    expect(shown).to_be_hidden()
    c.page.locator("#error-close").click()
    expect(c.by("error-banner")).to_be_hidden()
    return key


def watch_the_request(c: Console, key: str) -> None:
    row = c.page.locator('[data-testid="key-row"][data-key-name="browser-key"]')
    row.get_by_role("button", name="browser-key").click()
    plot = c.by("key-usage-plot")
    expect(plot).to_have_attribute("data-total", "0")
    reply = c.gw.openai(api_key=key).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello from the browser test"}]
    )
    assert reply.choices[0].message.content
    expect(plot).to_have_attribute("data-total", "1")  # the live refresh (every 2 s)
    expect(row).to_contain_text("1 req")
    c.go("requests")
    mine = c.by("request-row").filter(has_text="browser-key")
    expect(mine).to_have_count(1)
    expect(mine).to_contain_text("/v1/chat/completions")
    expect(mine).to_contain_text(MODEL)
    expect(mine).to_contain_text("200")
    c.shot("requests")
    c.go("overview")
    expect(c.by("plot-requests")).to_have_attribute("data-total", "1")
    expect(c.page.locator("#tile-requests")).to_have_text("1")
    c.shot("overview")


def revoke(c: Console, key: str) -> None:
    c.go("keys")
    row = c.page.locator('[data-testid="key-row"][data-key-name="browser-key"]')
    asked: list[str] = []

    def accept(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    c.page.once("dialog", accept)
    row.get_by_test_id("key-revoke").click()
    expect(row).to_contain_text("revoked")
    assert asked and "browser-key" in asked[0]
    err = until(lambda: refused(c.gw, key), timeout=CACHE_S + 1.5)  # a worker's key cache
    assert err is not None, "the revoked key still works"
    assert err.status_code == 401


def settings_and_language(c: Console) -> None:
    c.go("settings")
    expect(c.by("settings-row").first).to_be_visible()
    assert c.by("settings-row").count() > 20
    admin_row = c.page.locator('[data-testid="settings-row"][data-setting$="ADMIN_KEY"]')
    expect(admin_row).to_have_count(1)
    expect(admin_row).to_contain_text("set (hidden)")
    assert ADMIN_KEY not in c.page.content()
    c.shot("settings")
    c.by("lang-switch").click()
    c.go("overview")
    expect(c.by("nav-overview")).to_have_text("概览")
    expect(c.by("tile-requests")).to_contain_text("请求数")
    expect(c.page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(c.by("plot-requests")).to_contain_text("请求")
    c.shot("overview-zh")
    c.by("lang-switch").click()
    expect(c.by("nav-overview")).to_have_text("Overview")


def sign_out_and_a_wrong_key(c: Console) -> None:
    c.by("logout").click()
    expect(c.by("login-key")).to_be_visible()
    expect(c.by("nav-overview")).to_be_hidden()
    expect(c.by("key-row")).to_have_count(0)  # nothing of the console stays in the page
    c.page.reload()  # the cookie is gone: still signed out
    expect(c.by("login-key")).to_be_visible()
    c.by("login-key").fill("not-the-admin-key")
    c.by("login-submit").click()
    expect(c.by("error-banner")).to_be_visible()
    expect(c.by("error-banner")).to_contain_text("admin key is not right")
    expect(c.by("nav-overview")).to_be_hidden()


def test_an_operator_day_in_the_console(console: Console) -> None:
    started = time.monotonic()
    sign_in(console)
    account_quota(console)
    key = create_key(console)
    watch_the_request(console, key)
    revoke(console, key)
    settings_and_language(console)
    sign_out_and_a_wrong_key(console)
    assert console.errors == [], console.errors
    assert console.foreign == [], console.foreign
    names = sorted(p.stem for p in console.taken)
    assert names == sorted(
        ["signin", "accounts", "keys", "requests", "overview", "settings", "overview-zh"]
    )
    assert all(p.stat().st_size > 10_000 for p in console.taken)
    print(f"console browser flow: {time.monotonic() - started:.1f} s; shots in {console.shots}")
