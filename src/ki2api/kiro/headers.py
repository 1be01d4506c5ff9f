"""Request headers that mimic the Kiro IDE's AWS SDK client (docs/kiro-protocol.md §3.2).

The client versions they name live here and only here. A stale IDE version in the user agent is
a risk (docs/kiro-protocol.md §3.2: IDE builds 1.0.309 / 1.1.14 by Aug-Sep 2026; proxies with old
versions were flagged), so the IDE version is a setting (`KIRO_CLIENT_VERSION`): the server sets
it once at start with `set_client_version`; every header set built afterwards carries it.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "KIRO_VERSION",
    "NODE_VERSION",
    "SDK_VERSION",
    "chat_headers",
    "client_version",
    "machine_id",
    "set_client_version",
]

KIRO_VERSION = "1.1.14"  # the Kiro IDE build named in the user agent (default)
SDK_VERSION = "1.0.34"  # aws-sdk-js codewhispererstreaming client
NODE_VERSION = "22.22.0"

_client_version = KIRO_VERSION


def set_client_version(version: str) -> None:
    """Name IDE build `version` in the headers from now on (from settings, at start)."""
    global _client_version
    version = version.strip()
    if not version or any(c.isspace() or c in "/#" for c in version):
        raise ValueError(f"not a client version: {version!r}")
    _client_version = version


def client_version() -> str:
    return _client_version


def machine_id(seed: str) -> str:
    """A stable 64-hex machine id per account (never derived from a secret we would log)."""
    return hashlib.sha256(f"ki2api-machine/{seed}".encode()).hexdigest()


def chat_headers(access_token: str, *, machine: str, invocation_id: str) -> dict[str, str]:
    ide = f"KiroIDE-{_client_version}-{machine}"
    return {
        "authorization": f"Bearer {access_token}",
        "content-type": "application/json",
        "accept": "application/json",
        "x-amzn-codewhisperer-optout": "true",
        "x-amzn-kiro-agent-mode": "vibe",
        "x-amz-user-agent": f"aws-sdk-js/{SDK_VERSION} {ide}",
        "user-agent": (
            f"aws-sdk-js/{SDK_VERSION} ua/2.1 os/linux#6.1 lang/js md/nodejs#{NODE_VERSION} "
            f"api/codewhispererstreaming#{SDK_VERSION} m/E {ide}"
        ),
        "amz-sdk-invocation-id": invocation_id,
        "amz-sdk-request": "attempt=1; max=3",
    }
