"""Outbound proxies, pure parts (issue 13 part B): proxy URL parsing and checking, how a proxy
is shown without its credentials (core/proxy.py), KI2API_PROXY (settings.py), the CAs of
KI2API_PROXY_CA_FILE (http_client.proxy_tls), and the stable spreading of accounts over the
pool's default proxies with the per-proxy limit (kiro/accounts/proxies.py: assign, crowded,
limit_refusal). Table-driven."""

from __future__ import annotations

import dataclasses
import hashlib
import random
import ssl
from collections import Counter
from pathlib import Path

import pytest
import trustme

from ki2api.cli.main import main
from ki2api.core.proxy import ProxyURL, ProxyURLError, parse_proxy
from ki2api.http_client import proxy_tls
from ki2api.kiro.accounts.proxies import DIRECT, NetworkPath, assign, crowded, limit_refusal
from ki2api.settings import Settings, SettingsError, load_settings
from ki2api.state.base import AccountRecord

# (text, scheme, host, port, user, password, masked, url given to the HTTP client)
GOOD = [
    ("http://proxy.example:3128", "http", "proxy.example", 3128, None, None,
     "http://proxy.example:3128", "http://proxy.example:3128"),
    ("  HTTP://Proxy.Example:3128/  ", "http", "proxy.example", 3128, None, None,
     "http://proxy.example:3128", "http://proxy.example:3128"),
    ("https://u:p@secure.example:443", "https", "secure.example", 443, "u", "p",
     "https://secure.example:443", "https://u:p@secure.example:443"),
    ("socks5://user:pa%40ss%3Aw%2Cd@127.0.0.1:1080", "socks5", "127.0.0.1", 1080, "user",
     "pa@ss:w,d", "socks5://127.0.0.1:1080", "socks5://user:pa%40ss%3Aw%2Cd@127.0.0.1:1080"),
    ("socks5h://only-user@10.0.0.7:1080", "socks5h", "10.0.0.7", 1080, "only-user", None,
     "socks5h://10.0.0.7:1080", "socks5h://only-user@10.0.0.7:1080"),
    ("http://[::1]:8080", "http", "::1", 8080, None, None, "http://[::1]:8080",
     "http://[::1]:8080"),
    ("socks5://a:b@[2001:db8::1]:65535", "socks5", "2001:db8::1", 65535, "a", "b",
     "socks5://[2001:db8::1]:65535", "socks5://a:b@[2001:db8::1]:65535"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "scheme", "host", "port", "user", "password", "masked", "url"), GOOD
)
def test_a_good_proxy_url_is_parsed(
    text: str, scheme: str, host: str, port: int, user: str | None, password: str | None,
    masked: str, url: str,
) -> None:  # fmt: skip
    proxy = parse_proxy(text)
    assert (proxy.scheme, proxy.host, proxy.port) == (scheme, host, port)
    assert (proxy.username, proxy.password) == (user, password)
    assert proxy.masked == str(proxy) == masked
    assert proxy.url == url
    assert parse_proxy(proxy.url) == proxy  # the client's URL means the same proxy
    assert proxy.socks is scheme.startswith("socks")


# (text, a fragment of the message); no message may repeat the password "topsecret"
BAD = [
    ("proxy.example:3128", "needs a scheme"),
    ("user:topsecret@proxy.example:3128", "needs a scheme"),
    ("ftp://user:topsecret@proxy.example:21", "unsupported proxy scheme 'ftp'"),
    ("socks4://proxy.example:1080", "unsupported proxy scheme 'socks4'"),
    ("http://user:topsecret@proxy.example", "needs a port"),
    ("http://proxy.example:0", "from 1 to 65535"),
    ("http://user:topsecret@proxy.example:99999", "from 1 to 65535"),
    ("http://user:topsecret@proxy.example:port", "from 1 to 65535"),
    ("http://user:topsecret@:8080", "has no host"),
    ("http://proxy.example:3128/some/path", "with no path"),
    ("http://proxy.example:3128?x=1", "with no path"),
    ("http://proxy.example:3128#frag", "with no path"),
    ("http://:topsecret@proxy.example:3128", "a password but no user name"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD)
def test_a_bad_proxy_url_is_refused_saying_why(text: str, fragment: str) -> None:
    with pytest.raises(ProxyURLError) as caught:
        parse_proxy(text)
    assert fragment in str(caught.value)
    assert "topsecret" not in str(caught.value)


def _login_hash(user: str) -> str:
    return hashlib.sha256(user.encode()).hexdigest()[:6]


# (text, shown, path key)
SHOWN = [
    ("http://h.example:3128", "http://h.example:3128", "h.example:3128"),
    ("http://alice:pw@h.example:3128", f"http://h.example:3128 (login {_login_hash('alice')})",
     f"h.example:3128#{_login_hash('alice')}"),
    ("socks5h://bob:pw@[::1]:1080", f"socks5h://[::1]:1080 (login {_login_hash('bob')})",
     f"[::1]:1080#{_login_hash('bob')}"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "shown", "key"), SHOWN)
def test_a_proxy_is_shown_without_its_credentials(text: str, shown: str, key: str) -> None:
    proxy = parse_proxy(text)
    assert proxy.shown == shown and proxy.path_key == key
    for visible in (proxy.shown, proxy.masked, str(proxy), repr(proxy), proxy.path_key):
        assert "pw" not in visible and "alice" not in visible and "bob" not in visible


def test_two_logins_at_one_proxy_are_two_network_paths() -> None:
    a, b = parse_proxy("http://a:x@h:1"), parse_proxy("http://b:x@h:1")
    assert a.path_key != b.path_key and a.masked == b.masked
    assert parse_proxy("http://a:x@h:1").path_key == parse_proxy("socks5://a:y@h:1").path_key


# KI2API_PROXY: (value, proxies kept, or a fragment of the settings error)
POOL_DEFAULT = [
    ("", ()),
    ("http://a:1", ("http://a:1",)),
    (" http://a:1 , socks5://u:p@b:2 ,", ("http://a:1", "socks5://u:p@b:2")),
    ("http://a:1,ftp://u:topsecret@b:2", "KI2API_PROXY: proxy #2: unsupported proxy scheme"),
    ("socks5://u:topsecret@b", "KI2API_PROXY: proxy #1: the proxy URL needs a port"),
]


@pytest.mark.parametrize(("value", "want"), POOL_DEFAULT)
def test_the_pool_default_proxies_setting(
    tmp_path: Path, value: str, want: tuple[str, ...] | str
) -> None:
    env = {"HOME": str(tmp_path), "KI2API_PROXY": value}
    if isinstance(want, str):
        with pytest.raises(SettingsError) as caught:
            load_settings(env, dotenv=tmp_path / "none.env")
        assert want in str(caught.value) and "topsecret" not in str(caught.value)
        return
    settings = load_settings(env, dotenv=tmp_path / "none.env")
    assert settings.proxies == want
    assert settings.max_accounts_per_proxy == 3  # the default


# --- spreading accounts over the default proxies -------------------------------------------


def _rec(account_id: str, created: float, proxy: str | None = None) -> AccountRecord:
    return AccountRecord(
        account_id, "store", account_id, "social", "0" * 64, created_at=created, proxy=proxy
    )


A, B, C = (parse_proxy(f"http://{n}.proxy:3128") for n in "abc")
OWN = "socks5://me:pw@own.proxy:1080"


def _pool(n: int, *, own: dict[int, str] | None = None) -> list[AccountRecord]:
    own = own or {}
    return [_rec(f"acct-{i}", 1000.0 + i, own.get(i)) for i in range(n)]


def _load(paths: dict[str, NetworkPath]) -> dict[str, int]:
    return dict(Counter(path.key for path in paths.values()))


# (accounts, own proxies by index, defaults, limit, accounts per path wanted)
SPREAD = [
    (3, {}, [], 3, {DIRECT: 3}),
    (3, {1: OWN}, [], 3, {DIRECT: 2, parse_proxy(OWN).path_key: 1}),
    (3, {}, [A], 3, {A.path_key: 3}),
    (5, {}, [A], 3, {A.path_key: 5}),  # every proxy full: over the limit anyway
    (4, {}, [A, B], 2, {A.path_key: 2, B.path_key: 2}),
    (6, {}, [A, B, C], 2, {A.path_key: 2, B.path_key: 2, C.path_key: 2}),
    (9, {}, [A, B, C], 3, {A.path_key: 3, B.path_key: 3, C.path_key: 3}),
    # an account's own proxy counts first (the newest one's too): the other goes to B
    (2, {1: "http://a.proxy:3128"}, [A, B], 1, {A.path_key: 1, B.path_key: 1}),
    (3, {0: "http://u:p@a.proxy:3128"}, [A], 1, None),  # another login: another path
    (12, {}, [A, B, C], 0, None),  # no limit: checked below
]


@pytest.mark.parametrize(("n", "own", "defaults", "limit", "want"), SPREAD)
def test_accounts_are_spread_over_the_default_proxies(
    n: int, own: dict[int, str], defaults: list[ProxyURL], limit: int,
    want: dict[str, int] | None,
) -> None:  # fmt: skip
    records = _pool(n, own=own)
    paths = assign(records, defaults, limit)
    assert set(paths) == {r.id for r in records}
    for i, record in enumerate(records):
        path = paths[record.id]
        if i in own:
            assert path.origin == "account" and path.proxy == parse_proxy(own[i])
        elif defaults:
            assert path.origin == "default" and path.proxy in defaults
        else:
            assert path.origin == DIRECT and path.proxy is None and path.shown == DIRECT
    if want is not None:
        assert _load(paths) == want
    if limit == 0:  # each account follows its own ranking, whoever else is there
        for record in records:
            assert paths[record.id] == assign([record], defaults, 0)[record.id]


@pytest.mark.parametrize("seed", range(8))
def test_the_spread_is_stable(seed: int) -> None:
    rng = random.Random(seed)
    defaults = [A, B, C][: rng.randint(1, 3)]
    limit = rng.randint(0, 3)
    records = [_rec(f"k-{rng.getrandbits(32):08x}", 1000.0 + i) for i in range(10)]
    before = assign(records, defaults, limit)
    # the order the store lists them in does not matter
    assert assign(rng.sample(records, len(records)), defaults, limit) == before
    # an account added later never moves an older one
    later = [*records, _rec("k-newcomer", 5000.0), _rec("k-another", 5001.0)]
    after = assign(later, defaults, limit)
    assert {k: after[k] for k in before} == before
    # the limit holds while there is room
    if limit and len(records) <= limit * len(defaults):
        assert max(_load(before).values()) <= limit


def test_crowded_paths_are_the_ones_over_the_limit() -> None:
    records = _pool(5, own={0: OWN})
    paths = assign(records, [A], 2)  # 4 on A, 1 on its own proxy
    assert crowded(paths, 2) == [(A.shown, 4)]
    assert crowded(paths, 4) == [] and crowded(paths, 0) == []
    direct = assign(_pool(3), [], 2)
    assert crowded(direct, 2) == [(DIRECT, 3)]


# (own proxies of the others, the account, the proxy it asks for, limit, refused)
REFUSALS = [
    ({}, "acct-0", "http://u:topsecret@a.proxy:3128", 1, False),
    ({1: "http://u:topsecret@a.proxy:3128"}, "acct-0", "http://u:hunter2@a.proxy:3128", 1, True),
    ({1: "http://u:topsecret@a.proxy:3128"}, "acct-0", "socks5://u:hunter2@a.proxy:3128", 1, True),
    ({1: "http://u:topsecret@a.proxy:3128"}, "acct-0", "http://v:topsecret@a.proxy:3128", 1, False),
    ({1: "http://u:topsecret@a.proxy:3128"}, "acct-0", "http://a.proxy:3128", 1, False),
    ({1: "http://a.proxy:3128"}, "acct-1", "http://a.proxy:3128", 1, False),  # itself
    ({1: "http://a.proxy:3128", 2: "http://a.proxy:3128"}, "acct-0", "http://a.proxy:3128", 3,
     False),
    ({1: "http://a.proxy:3128", 2: "http://a.proxy:3128"}, "acct-0", "http://a.proxy:3128", 2,
     True),
    ({1: "http://a.proxy:3128", 2: "http://a.proxy:3128"}, "acct-0", "http://a.proxy:3128", 0,
     False),  # no limit
    ({1: "http://a.proxy:3128"}, "new", "http://a.proxy:3128", 1, True),  # a new account
]  # fmt: skip


@pytest.mark.parametrize(("own", "account_id", "proxy", "limit", "refused"), REFUSALS)
def test_an_own_proxy_over_the_limit_is_refused(
    own: dict[int, str], account_id: str, proxy: str, limit: int, refused: bool
) -> None:
    records = _pool(3, own=own)
    why = limit_refusal(records, account_id, parse_proxy(proxy), limit)
    assert (why is not None) is refused
    if why is not None:
        assert f"KI2API_MAX_ACCOUNTS_PER_PROXY={limit}" in why
        assert parse_proxy(proxy).masked in why and "topsecret" not in why and "hunter2" not in why


# --- KI2API_PROXY_CA_FILE: CAs for the TLS to https:// proxies --------------------------------


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "No such file or directory"),
        ("not a certificate\n", "NO_CERTIFICATE_OR_CRL_FOUND"),
    ],
)
def test_a_proxy_ca_file_without_a_ca_stops_the_start(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    fragment: str,
) -> None:
    pem = tmp_path / "ca.pem"
    if content is not None:
        pem.write_text(content)
    with pytest.raises(SettingsError) as caught:
        proxy_tls(dataclasses.replace(Settings(), proxy_ca_file=pem))
    assert "KI2API_PROXY_CA_FILE" in str(caught.value) and fragment in str(caught.value)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KI2API_PROXY_CA_FILE", str(pem))
    assert main(["doctor", "--no-upstream"]) == 2
    assert "configuration error: KI2API_PROXY_CA_FILE" in capsys.readouterr().err


def test_a_proxy_ca_file_is_trusted_besides_the_usual_cas(tmp_path: Path) -> None:
    ca = trustme.CA()
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    assert proxy_tls(Settings()) is None  # no file: the libraries' defaults
    context = proxy_tls(dataclasses.replace(Settings(), proxy_ca_file=pem))
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    subjects = [str(c["subject"]) for c in context.get_ca_certs()]
    assert len(subjects) > 10  # certifi's CAs are still there
    assert any("trustme" in s for s in subjects)
