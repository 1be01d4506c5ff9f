"""`ki2api demo` and the console: the banner's lines, and when a browser is opened (never
failing, never without a terminal and a desktop)."""

from __future__ import annotations

import sys
import webbrowser

import pytest

from ki2api.cli.runner import console_lines, open_console
from ki2api.settings import Settings

URL = "http://127.0.0.1:8989"


def test_the_banner_names_the_console_and_the_key_the_demo_made() -> None:
    made = console_lines(URL, "s3cret-made-by-demo")
    assert f"{URL}/ui/" in made and "s3cret-made-by-demo" in made
    own = console_lines(URL, None)  # ADMIN_KEY was set: it is not printed
    assert "the ADMIN_KEY you set" in own


CASES = [
    ("terminal and display", True, ":0", "linux", True, True),
    ("--no-browser", False, ":0", "linux", True, False),
    ("no terminal", True, ":0", "linux", False, False),
    ("no desktop", True, None, "linux", True, False),
    ("macOS needs no DISPLAY", True, None, "darwin", True, True),
    ("Windows needs no DISPLAY", True, None, "win32", True, True),
]


@pytest.mark.parametrize(
    ("name", "browser", "display", "platform", "tty", "opened"), CASES, ids=[c[0] for c in CASES]
)
def test_when_the_console_opens_in_a_browser(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    browser: bool,
    display: str | None,
    platform: str,
    tty: bool,
    opened: bool,
) -> None:
    seen: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, new=0: seen.append(url) or True)
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: tty)
    open_console(URL, Settings(display=display), browser=browser)
    assert seen == ([f"{URL}/ui/"] if opened else [])


def test_a_failing_browser_never_fails_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(url: str, new: int = 0) -> bool:
        raise webbrowser.Error("no runnable browser")

    monkeypatch.setattr(webbrowser, "open", broken)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    open_console(URL, Settings(display=":0"), browser=True)  # no exception
