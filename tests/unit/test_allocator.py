"""server/allocator.py: the malloc arena limit of a served process (glibc on Linux)."""

from __future__ import annotations

import sys

import pytest

from ki2api.server import allocator


@pytest.mark.parametrize(
    ("name", "platform", "env", "expected"),
    [
        ("linux, glibc, nothing set", "linux", {}, sys.platform.startswith("linux")),
        ("the environment's setting wins", "linux", {"MALLOC_ARENA_MAX": "4"}, False),
        ("not linux: nothing to do", "darwin", {}, False),
        ("windows", "win32", {}, False),
    ],
)
def test_limit_arenas(
    monkeypatch: pytest.MonkeyPatch, name: str, platform: str, env: dict[str, str], expected: bool
) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(allocator.sys, "platform", platform)
    assert allocator.limit_arenas() is expected, name
