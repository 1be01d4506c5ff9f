"""A local, protocol-faithful emulator of the Kiro backend (contract: docs EMULATOR.md).

`create_app(config)` builds a fresh ASGI app (state on `app.state.emulator`); `main(argv)` is
`ki2api emulator`; `write_credentials(dir, accounts)` writes Kiro token files.
"""

from __future__ import annotations

from .app import create_app
from .cli import main, parse_args
from .config import EmulatorConfig
from .credentials import write_credentials
from .state import EmulatorState

__all__ = [
    "EmulatorConfig",
    "EmulatorState",
    "create_app",
    "main",
    "parse_args",
    "write_credentials",
]
