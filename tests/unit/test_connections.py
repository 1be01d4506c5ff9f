"""The pure parts of server/connections.py and the settings that feed it."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from ki2api.server.connections import (
    BODY_MIN_RATE,
    FD_RESERVE,
    ConnectionLimits,
    body_deadline_s,
    connection_cap,
    raise_fd_limit,
)
from ki2api.settings import Settings, SettingsError, load_settings

CAPS = [
    ("the setting when descriptors are plenty", 1024, 1_048_576, 1024),
    ("half of what is left after the reserve", 1024, 1024, (1024 - FD_RESERVE) // 2),
    ("a tiny limit still allows one", 1024, 10, 1),
    ("a small setting wins", 3, 20_000, 3),
]


@pytest.mark.parametrize(("name", "wanted", "soft", "expected"), CAPS, ids=[c[0] for c in CAPS])
def test_connection_cap(name: str, wanted: int, soft: int, expected: int) -> None:
    assert connection_cap(wanted, soft) == expected


LIMITS = ConnectionLimits(body_timeout_s=60.0, max_body_bytes=16 * 1024 * 1024)
DEADLINES = [
    ("no body declared", 0, 60.0),
    ("one rate's worth", BODY_MIN_RATE, 61.0),
    ("the largest accepted body", 16 * 1024 * 1024, 60.0 + 256.0),
    ("a larger declaration earns no more", 10**30, 60.0 + 256.0),
    ("a negative length counts as none", -5, 60.0),
]


@pytest.mark.parametrize(("name", "declared", "expected"), DEADLINES, ids=[d[0] for d in DEADLINES])
def test_body_deadline(name: str, declared: int, expected: float) -> None:
    assert body_deadline_s(LIMITS, declared) == pytest.approx(expected)


def test_limits_from_settings_respect_the_descriptor_limit() -> None:
    settings = Settings(
        header_timeout_s=3, body_timeout_s=4, idle_timeout_s=5, max_client_connections=900
    )
    limits = ConnectionLimits.from_settings(settings, fd_limit=1024)
    assert (limits.header_timeout_s, limits.body_timeout_s, limits.idle_timeout_s) == (3, 4, 5)
    assert limits.max_connections == (1024 - FD_RESERVE) // 2


def test_raise_fd_limit_reaches_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if hard != resource.RLIM_INFINITY and soft > 64:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard))
        assert raise_fd_limit() == (hard if hard != resource.RLIM_INFINITY else soft)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


ENV_OK = [
    ({}, (10.0, 60.0, 30.0, 1024)),
    (
        {
            "KI2API_HEADER_TIMEOUT_S": "1.5",
            "KI2API_BODY_TIMEOUT_S": "2",
            "KI2API_IDLE_TIMEOUT_S": "3",
            "KI2API_MAX_CONNECTIONS": "500",
        },
        (1.5, 2.0, 3.0, 500),
    ),
]


@pytest.mark.parametrize(("env", "expected"), ENV_OK)
def test_connection_settings(tmp_path: Path, env: dict[str, str], expected: tuple[object]) -> None:
    s = load_settings({"HOME": str(tmp_path), **env}, dotenv=tmp_path / "none.env")
    assert (s.header_timeout_s, s.body_timeout_s, s.idle_timeout_s, s.max_client_connections) == (
        expected
    )


ENV_BAD = [
    ("KI2API_HEADER_TIMEOUT_S", "0"),
    ("KI2API_BODY_TIMEOUT_S", "-1"),
    ("KI2API_IDLE_TIMEOUT_S", "soon"),
    ("KI2API_MAX_CONNECTIONS", "0"),
    ("KI2API_MAX_CONNECTIONS", "1.5"),
]


@pytest.mark.parametrize(("name", "value"), ENV_BAD)
def test_bad_connection_settings_name_the_variable(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({"HOME": str(tmp_path), name: value}, dotenv=tmp_path / "none.env")
