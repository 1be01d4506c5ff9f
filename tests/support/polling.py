"""Waiting on a condition without a fixed sleep: a short poll with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["eventually", "until"]


def until(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Call `check` until it returns something truthy, or `timeout` seconds have passed; return
    its last result (falsy on a timeout: the caller's assertion says what was missing)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(interval)


def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """`until`, failing the test when `check` never returned something truthy in time."""
    found = until(check, timeout, interval)
    assert found, f"condition not met within {timeout:g} s"
    return found
