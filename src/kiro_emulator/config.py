"""Emulator configuration (the `ki2api emulator` flags)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EmulatorConfig"]


@dataclass
class EmulatorConfig:
    accounts: int = 1  # start-up accounts acct-1 .. acct-N
    auth_method: str = "social"  # "social" | "idc" for the start-up accounts
    token_ttl_s: float = 3600  # access token lifetime (per-account behaviour overrides)
    credentials_dir: Path | None = None  # write DIR/acct-K/kiro-auth-token.json at start-up
    base_url: str | None = None  # informational: where this emulator is reachable
    seed: int = 0  # tokens, ids and ARNs come from random.Random(seed)
    request_log_size: int = 256  # how many requests GET /_emulator/requests can show
    behaviour: dict[str, Any] = field(default_factory=dict)  # of the start-up accounts
