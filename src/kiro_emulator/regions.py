"""Several Q regions on one emulator (docs/emulator.md, "Regions").

Real Kiro serves the Q API from two regions, us-east-1 and eu-central-1, and refuses a login
on the wrong one with 403 "bearer token invalid" (docs/kiro-protocol.md §3.1). The emulator
serves every region under a path prefix: `http://HOST:PORT/eu-central-1/generateAssistantResponse`
is the eu-central-1 host (point the gateway's `KIRO_API_BASE` at `http://HOST:PORT/{region}`).
A request without a prefix is served for any account, as before.

An account's Q region is the region of its profileArn; the behaviour key `region` (default
us-east-1) is the login's own region at creation: it names the profile's region (European
regions -> eu-central-1) and an IdC token file's `region`.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["REGION_KEY", "q_region_of", "q_region_of_login", "split_region", "strip_region"]

REGION_KEY = "kiro_emulator.region"
_PREFIX = re.compile(r"^/([a-z]{2}(?:-[a-z]+)+-\d)(/.*)?$")
_ARN_REGION = re.compile(r"^arn:aws:codewhisperer:([a-z]{2}(?:-[a-z]+)+-\d):")


def split_region(path: str) -> tuple[str | None, str]:
    """(`eu-central-1`, `/mcp`) of `/eu-central-1/mcp`; (None, path) without a prefix."""
    found = _PREFIX.match(path)
    if found is None:
        return None, path
    return found.group(1), found.group(2) or "/"


def q_region_of_login(region: str) -> str:
    """The Q region a login of `region` must call."""
    return "eu-central-1" if region.startswith("eu-") else "us-east-1"


def q_region_of(profile_arn: str | None, login_region: str) -> str:
    found = _ARN_REGION.match(profile_arn or "")
    return found.group(1) if found else q_region_of_login(login_region)


def strip_region(scope: dict[str, Any]) -> None:
    """Move a region prefix of an HTTP request's path into the scope (REGION_KEY)."""
    region, path = split_region(str(scope.get("path", "")))
    if region is not None:
        scope[REGION_KEY] = region
        scope["path"] = path
        scope["raw_path"] = path.encode()
