"""Finding a login's profile ARN where the official clients do (docs/kiro-protocol.md §1.3, §1.4).

Identity Center logins carry no `profileArn` in their token file nor in their refresh answer, and
without one Kiro answers chat and usage calls with 403 "User is not authorized to make this
call.". The IDE keeps the chosen profile in `profile.json` under its user-data directory; any
client can ask the Q API: `POST {api_base}/` with
`x-amz-target: AmazonCodeWhispererService.ListAvailableProfiles` (AWS JSON 1.0) and body
`{"maxResults": 10}` answers `{"profiles": [{"arn", "profileName", ...}], "nextToken"}`.

`parse_profiles` is the pure parser; `list_available_profiles` the call; `ide_profile_arn` reads
the IDE's file. A placeholder ARN is never invented here: no profile found means None.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from ki2api.http_client import map_transport_errors
from ki2api.kiro.classify import json_answer

__all__ = [
    "LIST_PROFILES_TARGET",
    "ide_profile_arn",
    "ide_profile_paths",
    "list_available_profiles",
    "parse_profiles",
]

LIST_PROFILES_TARGET = "AmazonCodeWhispererService.ListAvailableProfiles"
_ARN = re.compile(r"^arn:aws[a-z-]*:codewhisperer:[a-z0-9-]+:\d{12}:profile/[A-Za-z0-9]+$")
_MAX_PAGES = 5
_MAX_BODY_BYTES = 1 << 20


def _arn(value: Any) -> str | None:
    return value if isinstance(value, str) and _ARN.match(value) else None


def parse_profiles(payload: Any) -> tuple[list[str], str | None]:
    """The profile ARNs of one `ListAvailableProfiles` page and its `nextToken`.
    Entries without a well-formed ARN are skipped."""
    if not isinstance(payload, Mapping):
        return [], None
    profiles = payload.get("profiles")
    arns = []
    for entry in profiles if isinstance(profiles, list) else []:
        arn = _arn(entry.get("arn")) if isinstance(entry, Mapping) else None
        if arn is not None:
            arns.append(arn)
    token = payload.get("nextToken")
    return arns, token if isinstance(token, str) and token else None


async def list_available_profiles(
    http: httpx.AsyncClient, *, api_base: str, access_token: str, timeout: float = 30.0
) -> list[str]:
    """Every profile ARN the login may use (all pages); upstream failures raise GatewayError."""
    found: list[str] = []
    token: str | None = None
    for _ in range(_MAX_PAGES):
        body: dict[str, Any] = {"maxResults": 10}
        if token:
            body["nextToken"] = token
        headers = {
            "authorization": f"Bearer {access_token}",
            "content-type": "application/x-amz-json-1.0",
            "x-amz-target": LIST_PROFILES_TARGET,
            "amz-sdk-invocation-id": str(uuid.uuid4()),
            "amz-sdk-request": "attempt=1; max=1",
        }
        with map_transport_errors("Kiro ListAvailableProfiles"):
            response = await http.post(
                f"{api_base.rstrip('/')}/", json=body, headers=headers, timeout=timeout
            )
        parsed = json_answer(
            response.status_code,
            response.content[:_MAX_BODY_BYTES],
            dict(response.headers),
            "Kiro ListAvailableProfiles",
        )
        arns, token = parse_profiles(parsed)
        found.extend(a for a in arns if a not in found)
        if token is None:
            break
    return found


def ide_profile_paths(home: Path, platform: str = sys.platform) -> list[Path]:
    """Where the Kiro IDE keeps `profile.json` (its user-data directory, per platform)."""
    tail = Path("Kiro", "User", "globalStorage", "kiro.kiroagent", "profile.json")
    if platform == "darwin":
        return [home / "Library" / "Application Support" / tail]
    if platform.startswith("win"):
        return [home / "AppData" / "Roaming" / tail]
    return [home / ".config" / tail]


def ide_profile_arn(home: Path, platform: str = sys.platform) -> str | None:
    """The profile the IDE chose (`{"arn": ...}`, also `profileArn`), or None."""
    for path in ide_profile_paths(home, platform):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, Mapping):
            arn = _arn(data.get("arn")) or _arn(data.get("profileArn"))
            if arn is not None:
                return arn
    return None
