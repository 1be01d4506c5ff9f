"""The console's session cookie, CSRF token, origin check and login throttle (pure)."""

from __future__ import annotations

import pytest

from ki2api.server.console.console_session import (
    LoginThrottle,
    check_admin_key,
    csrf_matches,
    is_console_path,
    issue_session,
    same_origin,
    verify_session,
)

KEY = "the-admin-key"
NOW = 1_800_000_000.0


def _tampered(cookie: str, part: int) -> str:
    body, mac = cookie.split(".")
    pieces = [body, mac]
    text = pieces[part]
    pieces[part] = ("A" if text[0] != "A" else "B") + text[1:]
    return ".".join(pieces)


def _other_payload(cookie: str) -> str:
    """The MAC of one session on the payload of another (a later expiry)."""
    later = issue_session(KEY, NOW + 10_000, nonce="n1").cookie
    return later.split(".")[0] + "." + cookie.split(".")[1]


GOOD = issue_session(KEY, NOW, nonce="n1")
VERIFY = [
    ("valid", KEY, GOOD.cookie, NOW + 10, True),
    ("valid until the last second", KEY, GOOD.cookie, GOOD.expires_at - 0.5, True),
    ("expired", KEY, GOOD.cookie, GOOD.expires_at, False),
    ("another admin key signs everyone out", "other-key", GOOD.cookie, NOW, False),
    ("payload tampered", KEY, _tampered(GOOD.cookie, 0), NOW, False),
    ("mac tampered", KEY, _tampered(GOOD.cookie, 1), NOW, False),
    ("mac of another payload", KEY, _other_payload(GOOD.cookie), NOW, False),
    ("missing", KEY, None, NOW, False),
    ("empty", KEY, "", NOW, False),
    ("no dot", KEY, GOOD.cookie.replace(".", ""), NOW, False),
    ("two dots", KEY, GOOD.cookie + ".x", NOW, False),
    ("not base64", KEY, "!!!.???", NOW, False),
    ("too long", KEY, "A" * 600 + "." + "B", NOW, False),
]


@pytest.mark.parametrize(("name", "key", "cookie", "now", "ok"), VERIFY, ids=[v[0] for v in VERIFY])
def test_verify_session(name: str, key: str, cookie: str | None, now: float, ok: bool) -> None:
    found = verify_session(key, cookie, now)
    assert (found is not None) is ok
    if found is not None:
        assert found == GOOD


def test_sessions_differ_and_the_csrf_token_belongs_to_its_session() -> None:
    a, b = issue_session(KEY, NOW), issue_session(KEY, NOW)
    assert a.cookie != b.cookie and a.csrf != b.csrf
    assert a.expires_at == int(NOW) + 43_200
    assert csrf_matches(a, a.csrf)
    assert not csrf_matches(a, b.csrf)
    assert not csrf_matches(a, None)
    assert not csrf_matches(a, "")
    assert KEY not in a.cookie and KEY not in a.csrf


ADMIN = [
    ("right", KEY, True),
    ("wrong", "the-admin-kez", False),
    ("prefix", KEY[:-1], False),
    ("empty", "", False),
    ("not text", 12, False),
    ("none", None, False),
    ("huge", "x" * 5000, False),
]


@pytest.mark.parametrize(("name", "given", "ok"), ADMIN, ids=[a[0] for a in ADMIN])
def test_check_admin_key(name: str, given: object, ok: bool) -> None:
    assert check_admin_key(KEY, given) is ok


ORIGINS = [
    ("no origin (curl)", None, None, "gw:8989", False, True),
    ("same origin", "http://gw:8989", "same-origin", "gw:8989", False, True),
    ("same origin over https", "https://gw", None, "gw", True, True),
    ("http origin on an https request", "http://gw", None, "gw", True, False),
    ("foreign origin", "http://evil.example", None, "gw:8989", False, False),
    ("other port", "http://gw:9999", None, "gw:8989", False, False),
    ("cross-site fetch", None, "cross-site", "gw:8989", False, False),
    ("same-site fetch without origin", None, "same-site", "gw:8989", False, True),
    ("origin null", "null", None, "gw:8989", False, False),
    ("no host", "http://gw", None, None, False, False),
]


@pytest.mark.parametrize(
    ("name", "origin", "site", "host", "https", "ok"), ORIGINS, ids=[o[0] for o in ORIGINS]
)
def test_same_origin(
    name: str, origin: str | None, site: str | None, host: str | None, https: bool, ok: bool
) -> None:
    assert same_origin(origin, site, host, https) is ok


PATHS = [
    ("/", True),
    ("/ui", True),
    ("/ui/", True),
    ("/ui/overview", True),
    ("/ui/api/login", True),
    ("/uix", False),
    ("/v1/chat/completions", False),
    ("/health", False),
    ("/metrics", False),
]


@pytest.mark.parametrize(("path", "ok"), PATHS)
def test_console_paths(path: str, ok: bool) -> None:
    assert is_console_path(path) is ok


def test_the_throttle_waits_after_five_failures_within_the_window() -> None:
    t = LoginThrottle(max_failures=5, window_s=60)
    for i in range(5):
        assert t.retry_after("1.2.3.4", 100 + i) is None
        t.failed("1.2.3.4", 100 + i)
    wait = t.retry_after("1.2.3.4", 105)
    assert wait is not None and 50 <= wait <= 60
    assert t.retry_after("5.6.7.8", 105) is None  # per client address
    assert t.retry_after("1.2.3.4", 160.5) is None  # the oldest failure left the window
    t.failed("1.2.3.4", 160.6)  # with the four still inside the window: five again
    assert t.retry_after("1.2.3.4", 160.7) is not None


def test_a_success_clears_the_failures_and_the_table_is_bounded() -> None:
    t = LoginThrottle(max_failures=2, window_s=60, max_clients=3)
    t.failed("a", 0)
    t.failed("a", 1)
    assert t.retry_after("a", 2) is not None
    t.succeeded("a")
    assert t.retry_after("a", 2) is None
    for n in range(10):
        t.failed(f"c{n}", 5)
    assert len(t._failures) == 3
