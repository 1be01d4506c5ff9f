"""Request headers that mimic the Kiro IDE's AWS SDK client (KIRO_PROTOCOL.md 3.2). Pure."""

from __future__ import annotations

import hashlib

__all__ = ["KIRO_VERSION", "chat_headers", "machine_id"]

KIRO_VERSION = "0.11.107"
_SDK = "1.0.34"
_NODE = "22.22.0"


def machine_id(seed: str) -> str:
    """A stable 64-hex machine id per account (never derived from a secret we would log)."""
    return hashlib.sha256(f"ki2api-machine/{seed}".encode()).hexdigest()


def chat_headers(access_token: str, *, machine: str, invocation_id: str) -> dict[str, str]:
    ide = f"KiroIDE-{KIRO_VERSION}-{machine}"
    return {
        "authorization": f"Bearer {access_token}",
        "content-type": "application/json",
        "accept": "application/json",
        "x-amzn-codewhisperer-optout": "true",
        "x-amzn-kiro-agent-mode": "vibe",
        "x-amz-user-agent": f"aws-sdk-js/{_SDK} {ide}",
        "user-agent": (
            f"aws-sdk-js/{_SDK} ua/2.1 os/linux#6.1 lang/js md/nodejs#{_NODE} "
            f"api/codewhispererstreaming#{_SDK} m/E {ide}"
        ),
        "amz-sdk-invocation-id": invocation_id,
        "amz-sdk-request": "attempt=1; max=3",
    }
