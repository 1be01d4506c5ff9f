"""Pure parts of the network defaults: loopback binds, the Host check, the client-key parser,
the default-key exposure rule and the settings behind them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ki2api.cli.runner import default_key_exposure
from ki2api.server.auth import identify, presented_keys
from ki2api.server.hosts import host_allowed, host_name, is_loopback_host
from ki2api.settings import DEFAULT_API_KEY, Settings, SettingsError, load_settings

LOOPBACK = [
    ("127.0.0.1", True),
    ("127.1.2.3", True),
    ("::1", True),
    ("[::1]", True),
    ("localhost", True),
    ("LocalHost.", True),
    ("app.localhost", True),
    ("0.0.0.0", False),
    ("::", False),
    ("", False),
    ("192.168.1.10", False),
    ("localhost.evil.example", False),
    ("example.com", False),
]


@pytest.mark.parametrize(("host", "expected"), LOOPBACK)
def test_is_loopback_host(host: str, expected: bool) -> None:
    assert is_loopback_host(host) is expected


HOST_NAMES = [
    ("localhost:8989", "localhost"),
    ("127.0.0.1", "127.0.0.1"),
    ("[::1]:8989", "::1"),
    ("[::1]", "::1"),
    ("Proxy.Example.:443", "proxy.example"),
]


@pytest.mark.parametrize(("header", "expected"), HOST_NAMES)
def test_host_name(header: str, expected: str) -> None:
    assert host_name(header) == expected


HOST_CHECKS = [
    ("loopback ip with port", "127.0.0.1:8989", (), True),
    ("localhost", "localhost:1234", (), True),
    ("ipv6 loopback", "[::1]:8989", (), True),
    ("no Host header", None, (), True),
    ("a rebinding name", "evil.example:8989", (), False),
    ("a name that starts like localhost", "localhost.evil.example", (), False),
    ("a LAN address", "192.168.1.10:8989", (), False),
    ("an allowed proxy name", "proxy.example", ("proxy.example",), True),
    ("an allowed name, any port", "proxy.example:8443", ("proxy.example",), True),
    ("another name", "other.example", ("proxy.example",), False),
    ("the check turned off", "anything.example", ("*",), True),
]


@pytest.mark.parametrize(
    ("name", "header", "allowed", "expected"), HOST_CHECKS, ids=[c[0] for c in HOST_CHECKS]
)
def test_host_allowed(
    name: str, header: str | None, allowed: tuple[str, ...], expected: bool
) -> None:
    assert host_allowed(header, allowed) is expected


KEYS = ("alpha-key", "beta-key")


def _sha8(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def _headers(bearer: str | None, x_api_key: str | None) -> dict[str, str]:
    headers = {"authorization": bearer} if bearer is not None else {}
    return headers | ({"x-api-key": x_api_key} if x_api_key is not None else {})


IDENTIFY = [
    ("bearer", "Bearer alpha-key", None, "key-1"),
    ("bearer, any case and spaces", "bearer   beta-key ", None, "key-2"),
    ("x-api-key", None, "beta-key", "key-2"),
    ("valid bearer, junk x-api-key", "Bearer alpha-key", "junk", "key-1"),
    ("junk bearer, valid x-api-key", "Bearer junk", "beta-key", "key-2"),
    ("both valid: bearer first", "Bearer beta-key", "alpha-key", "key-2"),
    ("both junk: the bearer one", "Bearer junk1", "junk2", "invalid:" + _sha8("junk1")),
    ("only junk x-api-key", None, "junk2", "invalid:" + _sha8("junk2")),
    ("basic auth is not a key", "Basic YWxwaGEta2V5", None, "none"),
    ("empty bearer", "Bearer ", None, "none"),
    ("nothing", None, None, "none"),
    ("a prefix of a key", None, "alpha", "invalid:" + _sha8("alpha")),
]


@pytest.mark.parametrize(
    ("name", "bearer", "x_api_key", "expected"), IDENTIFY, ids=[c[0] for c in IDENTIFY]
)
def test_identify(name: str, bearer: str | None, x_api_key: str | None, expected: str) -> None:
    client = identify(_headers(bearer, x_api_key), KEYS)
    assert client.fingerprint == expected
    assert "key" not in repr(client).replace("ClientKey", "")  # never the key itself


def test_presented_keys_are_the_bytes_that_arrived() -> None:
    assert presented_keys({"x-api-key": "caf\xe9"}) == (b"caf\xe9",)


EXPOSURE = [
    ("default key on all interfaces", "0.0.0.0", (DEFAULT_API_KEY,), True),
    ("default key among others on a LAN address", "192.168.1.10", ("x", DEFAULT_API_KEY), True),
    ("default key on loopback", "127.0.0.1", (DEFAULT_API_KEY,), False),
    ("default key on localhost", "localhost", (DEFAULT_API_KEY,), False),
    ("own key on all interfaces", "0.0.0.0", ("my-own-secret",), False),
]


@pytest.mark.parametrize(
    ("name", "host", "keys", "exposed"), EXPOSURE, ids=[c[0] for c in EXPOSURE]
)
def test_default_key_exposure(name: str, host: str, keys: tuple[str, ...], exposed: bool) -> None:
    problem = default_key_exposure(Settings(host=host, api_keys=keys))
    assert (problem is not None) is exposed
    if problem:
        assert host in problem and DEFAULT_API_KEY not in problem


BAD_KEYS = ["clé-secrète", "key\twith-tab", "ok-key,ключ"]


@pytest.mark.parametrize("value", BAD_KEYS)
def test_a_key_no_header_can_carry_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(SettingsError, match="API_KEY") as caught:
        load_settings({"HOME": str(tmp_path), "API_KEY": value}, dotenv=tmp_path / "none.env")
    assert value.split(",")[-1] not in str(caught.value)  # the message never shows the key


ALLOWED_HOSTS = [
    ("", ()),
    ("proxy.example", ("proxy.example",)),
    (" Proxy.Example:443 , [::1]:8989,*", ("proxy.example", "::1", "*")),
]


@pytest.mark.parametrize(("raw", "expected"), ALLOWED_HOSTS)
def test_allowed_hosts_setting(tmp_path: Path, raw: str, expected: tuple[str, ...]) -> None:
    env = {"HOME": str(tmp_path), "KI2API_ALLOWED_HOSTS": raw, "KI2API_ALLOW_DEFAULT_KEY": "1"}
    s = load_settings(env, dotenv=tmp_path / "none.env")
    assert s.allowed_hosts == expected and s.allow_default_key is True
