"""RequestTrace: what one client request did, filled in along the way, logged once at the end.

The server creates one per chat request; the backend notes the account(s) it tried and the usage
the upstream reported; the error path notes the outcome. `server/accounting.py` turns it into
exactly one usage-log row when the response is over, whatever happened.
"""

from __future__ import annotations

from dataclasses import dataclass

from ki2api.core.events import Usage

__all__ = ["RequestTrace"]


@dataclass(slots=True)
class RequestTrace:
    at: float  # epoch seconds when the request arrived
    endpoint: str
    client_key: str  # fingerprint of the client's key, never the key
    model: str | None = None
    stream: bool = False
    account_id: str | None = None  # the account that served (or last tried)
    attempts: int = 0  # upstream attempts, one per account tried
    input_tokens: int | None = None
    output_tokens: int | None = None
    outcome: str | None = None  # None until known: "ok" or an ErrorKind value

    def tried(self, account_id: str) -> None:
        self.account_id = account_id
        self.attempts += 1

    def usage(self, usage: Usage) -> None:
        self.input_tokens = usage.input_tokens
        self.output_tokens = usage.output_tokens

    def fail(self, outcome: str) -> None:
        """Note the first failure (a later cleanup error does not hide the real cause)."""
        if self.outcome is None:
            self.outcome = outcome
