"""The client Ki2API presents itself as: every version string of the Kiro headers, in one place.

The Kiro IDE's AWS SDK client names itself in `user-agent` and `x-amz-user-agent`
(docs/kiro-protocol.md §3.2): the SDK version, the OS and its version, the Node.js version of the
IDE's Electron, and the IDE build (`KiroIDE-{build}-{machineId}`). A stale build is a risk
(§3.2, §8): proxies with old versions were flagged, and Kiro stopped serving old IDE builds
(§8). The chat, getUsageLimits, ListAvailableModels and /mcp calls all take their headers from
here (`kiro/endpoint.py`); the token refresh and ListAvailableProfiles calls name no version.

**The built-in set** (checked 2026-12, sources in docs/kiro-protocol.md §3.2): IDE build 1.1.14,
aws-sdk-js 1.0.34 for the codewhispererstreaming client, Node.js 22.22.0.

**Per account, stable**: the machine id is per account already; the one other value that varies
between real installations, the OS string, is chosen per account from `os_choices` by a hash of
the account's machine id, so an account always shows the same OS and a pool does not show one
OS for every account.

**Updating without a release**: `KI2API_CLIENT_IDENTITY` names a JSON file with any of the
fields below (unknown keys and malformed values are refused at start with the setting's name);
`KIRO_CLIENT_VERSION` still sets the IDE build alone; a file that names `ide_version` wins.
`ki2api doctor` prints the identity in force. See docs/accounts.md, "Trouble signs".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BUILT_IN",
    "ClientIdentity",
    "IdentityError",
    "identity_from_json",
    "load_identity",
]

_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}")
_OS = re.compile(r"(?:darwin|win32|linux)#[0-9A-Za-z][0-9A-Za-z.+_-]{0,39}")
_MODE = re.compile(r"[a-z][a-z0-9_-]{0,15}")
_MAX_FILE_BYTES = 64 * 1024


class IdentityError(ValueError):
    """A client identity file that cannot be used; the message names what is wrong."""


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """The version strings of the Kiro IDE's headers (docs/kiro-protocol.md §3.2)."""

    ide_version: str = "1.1.14"  # the KiroIDE-{build} of both user agents
    sdk_version: str = "1.0.34"  # aws-sdk-js codewhispererstreaming
    node_version: str = "22.22.0"  # md/nodejs#{version}
    # `os/{name}#{version}`: one per account, chosen by its machine id
    os_choices: tuple[str, ...] = ("darwin#24.6.0", "win32#10.0.26100", "linux#6.8.0")
    agent_mode: str = "vibe"  # x-amzn-kiro-agent-mode
    source: str = "built in"  # where this identity came from (shown by `ki2api doctor`)

    def os_for(self, machine: str) -> str:
        """The OS string of the account with this machine id: stable, spread over the list."""
        digest = hashlib.sha256(f"ki2api-os/{machine}".encode()).digest()
        return self.os_choices[int.from_bytes(digest[:4], "big") % len(self.os_choices)]

    def headers(self, machine: str) -> dict[str, str]:
        """The identifying headers of one account's calls (no token, no per-call id)."""
        ide = f"KiroIDE-{self.ide_version}-{machine}"
        sdk = self.sdk_version
        return {
            "x-amzn-kiro-agent-mode": self.agent_mode,
            "x-amz-user-agent": f"aws-sdk-js/{sdk} {ide}",
            "user-agent": (
                f"aws-sdk-js/{sdk} ua/2.1 os/{self.os_for(machine)} lang/js "
                f"md/nodejs#{self.node_version} api/codewhispererstreaming#{sdk} m/E {ide}"
            ),
        }

    def describe(self) -> str:
        return (
            f"KiroIDE {self.ide_version}, aws-sdk-js {self.sdk_version}, Node.js "
            f"{self.node_version}, OS per account among {', '.join(self.os_choices)} "
            f"({self.source})"
        )

    def with_ide_version(self, version: str) -> ClientIdentity:
        return dataclasses.replace(self, ide_version=_version("ide_version", version))


BUILT_IN = ClientIdentity()


def _version(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _VERSION.fullmatch(value.strip()):
        raise IdentityError(f"{key} must look like 1.1.14, not {value!r}")
    return value.strip()


def _os_choices(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or len(value) > 16:
        raise IdentityError(f"{key} must be a list of 1 to 16 strings like darwin#24.6.0")
    for item in value:
        if not isinstance(item, str) or not _OS.fullmatch(item):
            raise IdentityError(f"{key}: {item!r} is not like darwin#24.6.0 or win32#10.0.26100")
    return tuple(value)


def _mode(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _MODE.fullmatch(value):
        raise IdentityError(f"{key} must be a short lower-case word like vibe")
    return value


_FIELDS = {
    "ide_version": _version,
    "sdk_version": _version,
    "node_version": _version,
    "os_choices": _os_choices,
    "agent_mode": _mode,
}


def identity_from_json(
    data: Mapping[str, Any], *, source: str, base: ClientIdentity = BUILT_IN
) -> ClientIdentity:
    """`base` with the fields of `data` (a parsed JSON object); IdentityError names a bad or
    unknown key. Keys starting with `_` are comments and ignored (e.g. `_source`)."""
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key.startswith("_"):
            continue
        check = _FIELDS.get(key)
        if check is None:
            raise IdentityError(f"unknown key {key!r} (known: {', '.join(_FIELDS)})")
        values[key] = check(key, value)
    return dataclasses.replace(base, **values, source=source)


def load_identity(path: Path, *, base: ClientIdentity = BUILT_IN) -> ClientIdentity:
    """The identity of the JSON file at `path`; IdentityError says what is wrong with it."""
    try:
        raw = path.read_bytes()[: _MAX_FILE_BYTES + 1]
    except OSError as exc:
        raise IdentityError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > _MAX_FILE_BYTES:
        raise IdentityError(f"{path} is larger than {_MAX_FILE_BYTES} bytes")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise IdentityError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise IdentityError(f"{path} must hold a JSON object")
    try:
        return identity_from_json(data, source=f"file {path}", base=base)
    except IdentityError as exc:
        raise IdentityError(f"{path}: {exc}") from None
