"""The console page's static files (src/ki2api/server/console/static/), read as text: every string
the page shows has an English and a Chinese entry, nothing breaks the content security policy
(no inline script, inline style, handler attribute, eval or HTML built from strings), nothing is
fetched from another host, and the browser test's hooks exist. The page's behaviour is tested in
a real browser (tests/e2e/test_console_browser.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "src" / "ki2api" / "server" / "console" / "static"
HTML = (STATIC / "index.html").read_text(encoding="utf-8")
SCRIPTS = {p.name: p.read_text(encoding="utf-8") for p in sorted(STATIC.glob("*.js"))}
I18N = SCRIPTS["i18n.js"]
CONSOLE = SCRIPTS["console.js"]

TESTIDS = (
    "login-key login-submit nav-overview nav-accounts nav-keys nav-requests nav-settings "
    "lang-switch logout tile-requests plot-requests account-row quota-bar key-create-name "
    "key-create-rpm key-create-submit new-key key-row key-revoke key-usage-plot request-row "
    "settings-row error-banner"
).split()
# Keys the page builds from a prefix and a value of the API or the page.
BUILT = {
    "state.": ["ok", "resting", "disabled", "active", "revoked", "expired"],
    "nav.": ["overview", "accounts", "keys", "requests", "settings"],
    "acc.": ["enable", "disable"],
    "keys.": ["enable", "disable"],
    "err.": ["bad_admin_key", "signed_out", "csrf"],
}


def dictionary(lang: str) -> dict[str, str]:
    block = re.search(rf"const {lang} = \{{(.*?)\n  \}};", I18N, re.S)
    assert block, f"no `const {lang} = {{...}};` in i18n.js"
    return dict(re.findall(r'^\s*"([\w.]+)": "((?:[^"\\]|\\.)*)",?$', block.group(1), re.M))


EN, ZH = dictionary("en"), dictionary("zh")


def used_keys() -> set[str]:
    in_html = re.findall(r'data-i18n(?:-ph|-title|-aria)?="([\w.]+)"', HTML)
    in_js = re.findall(r'\bt\("([\w.]+)"', CONSOLE)
    prefixes = {k for k in in_js if k.endswith(".")}  # t("nav." + page): its values in BUILT
    assert prefixes <= BUILT.keys(), f"keys built from {prefixes - BUILT.keys()} are not listed"
    built = [prefix + name for prefix, names in BUILT.items() for name in names]
    return {*in_html, *(k for k in in_js if k not in prefixes), *built}


def test_both_languages_have_the_same_keys_and_chinese_is_chinese() -> None:
    assert len(EN) > 150 and EN.keys() == ZH.keys()
    cjk = [k for k, v in ZH.items() if re.search(r"[\u4e00-\u9fff]", v)]
    assert len(cjk) > 0.8 * len(ZH)  # the rest: symbols, units, "p50", the language's own name


@pytest.mark.parametrize("key", sorted(used_keys()))
def test_every_string_the_page_shows_is_in_both_dictionaries(key: str) -> None:
    assert key in EN and key in ZH


@pytest.mark.parametrize(
    ("what", "pattern"),
    [
        ("an inline script", r"<script(?![^>]*\bsrc=)[^>]*>"),
        ("a style attribute", r"\sstyle="),
        ("a <style> element", r"<style"),
        ("a handler attribute", r"\son[a-z]+="),
        ("a URL of another host", r"(?:src|href|action)=\"(?:https?:)?//"),
    ],
)
def test_the_html_keeps_to_the_content_security_policy(what: str, pattern: str) -> None:
    assert not re.search(pattern, HTML, re.I), f"index.html has {what}"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_the_scripts_build_no_html_from_strings_and_ask_only_the_gateway(name: str) -> None:
    text = SCRIPTS[name]
    for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert banned not in text, f"{name} uses {banned}"
    assert "new Function" not in text and "sessionStorage" not in text
    assert not re.search(r"setAttribute\(\s*\"style\"", text)
    for url in re.findall(r"\"(https?://[^\"]*)\"", text):
        assert url == "http://www.w3.org/2000/svg", f"{name} names {url}"


def test_the_api_paths_are_the_gateways_own_and_storage_holds_no_secret() -> None:
    paths = re.findall(r'api\("(?:GET|POST|DELETE)", "([^"]*)"', CONSOLE)
    assert paths and all(p.startswith("/ui/api/") for p in paths)
    stored = re.findall(r'localStorage\.setItem\(("[^"]*"|\w+)', I18N + CONSOLE)
    assert sorted(stored) == ['"ki2api.console.window"', "STORE"]
    assert 'STORE = "ki2api.console.lang"' in I18N


@pytest.mark.parametrize("testid", TESTIDS)
def test_the_browser_tests_hooks_exist(testid: str) -> None:
    assert f'data-testid="{testid}"' in HTML or f'"{testid}"' in CONSOLE
