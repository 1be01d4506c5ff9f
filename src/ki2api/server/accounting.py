"""One usage-log row per chat request, whatever happens to it.

`Accounting` (applied by `server/front_door.py`) follows the chat endpoints (`CHAT_PATHS`: chat
completions, messages and the Responses API's create; not count_tokens, a local estimate that
asks no model). It puts a
`RequestTrace` in the request scope (`scope["state"]["trace"]`), lets the route, the backend
and the stream fill it in (model, accounts tried, usage, outcome), and when the response is
over (sent, failed, or abandoned by the client) hands exactly one `UsageRow` to the usage log.
The log writes in batches off the request path.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import Scope

from ki2api.core.errors import ErrorKind
from ki2api.core.trace import RequestTrace
from ki2api.server.auth import identity
from ki2api.server.client_keys import client_key_of
from ki2api.state.base import UsageRow
from ki2api.state.usage_log import UsageLog

__all__ = [
    "CHAT_PATHS",
    "Accounting",
    "client_key_fingerprint",
    "outcome_of",
    "trace_of",
]

CHAT_PATHS = frozenset({"/v1/chat/completions", "/v1/messages", "/v1/responses"})
_STATUS_OUTCOME = {
    400: ErrorKind.INVALID_REQUEST,
    401: ErrorKind.AUTHENTICATION,
    403: ErrorKind.PERMISSION,
    404: ErrorKind.NOT_FOUND,
    413: ErrorKind.REQUEST_TOO_LARGE,
    429: ErrorKind.RATE_LIMITED,
}


def client_key_fingerprint(scope: Scope, keys: tuple[str, ...]) -> str:
    """`key-N` for the N-th configured key (N from 1), `invalid:<hash>` or `none`; never the
    key. The same parser as authentication (`auth.identify`): the row names the key that
    authenticated the request; a store key (`ki2api keys`) by its name."""
    client = identity(scope, keys)
    record = client_key_of(scope)
    return record.name if record is not None and client.index is None else client.fingerprint


def trace_of(scope: Scope) -> RequestTrace | None:
    trace = (scope.get("state") or {}).get("trace")
    return trace if isinstance(trace, RequestTrace) else None


class Accounting:
    """The chat requests' traces and usage rows (see the module's docstring)."""

    def __init__(
        self,
        *,
        usage: Callable[[], UsageLog | None],
        keys: tuple[str, ...],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._usage = usage
        self._keys = keys
        self._clock = clock

    def open(self, scope: Scope) -> RequestTrace:
        """The request's trace, put in its scope; the usage log now waits for its row."""
        trace = RequestTrace(
            at=self._clock(),
            endpoint=str(scope["path"]),
            client_key=client_key_fingerprint(scope, self._keys),
        )
        scope.setdefault("state", {})["trace"] = trace
        usage = self._usage()
        if usage is not None:
            usage.begin()  # closing the log waits for this row
        return trace

    def close(
        self, trace: RequestTrace, status: int, started: float, first_byte_at: float | None
    ) -> None:
        """The request is over (`status` 0: no response started): its one usage row."""
        usage = self._usage()
        if usage is None:
            return
        try:
            usage.add(_row(trace, status, started, first_byte_at))
        finally:
            usage.end()


def _row(trace: RequestTrace, status: int, started: float, first_byte_at: float | None) -> UsageRow:
    return UsageRow(
        at=trace.at,
        client_key=trace.client_key,
        account_id=trace.account_id,
        model=trace.model,
        input_tokens=trace.input_tokens,
        output_tokens=trace.output_tokens,
        latency_ms=_ms(time.perf_counter() - started),  # both from `started`: ttft <= it
        outcome=trace.outcome or outcome_of(status),
        endpoint=trace.endpoint,
        stream=trace.stream,
        attempts=trace.attempts,
        ttft_ms=_ms(first_byte_at - started) if first_byte_at is not None else None,
        status=status or None,
    )


def _ms(seconds: float) -> float:
    return round(max(0.0, seconds) * 1000, 3)


def outcome_of(status: int) -> str:
    """The usage log's outcome for a request answered with `status` (0: the client left)."""
    if 200 <= status < 300:
        return "ok"
    if status == 0:
        return ErrorKind.CANCELLED.value
    kind = _STATUS_OUTCOME.get(status)
    if kind is not None:
        return kind.value
    return ErrorKind.UPSTREAM_ERROR.value if status < 500 else ErrorKind.INTERNAL.value
