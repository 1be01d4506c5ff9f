"""A local, protocol-faithful emulator of the Kiro backend (contract: docs/emulator.md).

`create_app(config, *, clock=None, sleep=None)` builds a fresh ASGI app (state on
`app.state.emulator`); `main(argv)` is `ki2api emulator`; `write_credentials(dir, accounts)`
writes Kiro token files. Validation rules and their sources: `validate.py`'s docstring.

Extensions beyond the first contract (its forms all still work; docs/emulator.md has all):
- directives `events` (exactly n text frames) and `metadata_usage` (a metadataEvent);
  `error.type` sets `x-amzn-errortype`; `exception.reason`; per tool call `fragments` and
  `toolUseId`; `exception.after_events` defaults to after the content events.
- `GET /_emulator/accounts` lists accounts; `POST /_emulator/accounts/{id}/expire` expires the
  account's access tokens now.
- stats also count `served` (streams answered) and `refresh_failures`; request-log entries
  also carry `method`, `status`, `rejected` (which rule fired) and `body_bytes`.
- per-account faults beyond the contract's three (behaviour.py, faults.py, docs/emulator.md):
  `server_error`, `unavailable`, `high_load`, `drop_connection`, `empty_stream`,
  `end_without_closing`, `truncate_after_events`, `first_event_delay_ms`, `stall_after_events`,
  seeded random injection (`fault_rate`, `faults`, `fault_seed`, `fault_delay_ms`),
  `retry_after_s`, `quota_reset_at`, `usage_limit`; stats count `faults`, log entries name
  the `fault`;
  `ki2api emulator --behaviour JSON` for the start-up accounts.
- `GET /ListAvailableModels` pages with `maxResults` / `nextToken`.
- thinking mode: a current message carrying `<thinking_mode>enabled|adaptive</thinking_mode>`
  (the tags gateways inject, docs/kiro-protocol.md §3.8) is answered with
  `<thinking>Thinking about: {message}</thinking>\n\n` first (the tags are not echoed); the
  directive `reasoning` (a string or `{"text", "signature"}`) sends native
  `reasoningContentEvent` frames (the signature on the last) before the text instead.
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
