"""What each finished request adds to the metrics, and its JSON access line (`LOG_FORMAT=json`).

`Observer.finish` is called by `server/front_door.py` when a response is over: it increments the
request counter, observes the duration (and, for a stream, the time to its first content: the
route sends the 200 only with the first content), adds the tokens, and in JSON mode logs one
line. The chat routes' `RequestTrace`
(`server/accounting.py`) supplies the model, account, key name, attempts and tokens; the front
door passes the time of the response's start to the usage row too (its ttft_ms). The console's
paths (`/`, `/ui…`) are not the client API: not counted. Cost: a few counter increments and two
histogram observations per request, nothing per event.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import Scope

from ki2api.core.trace import RequestTrace
from ki2api.metrics import DURATION, REQUESTS, TOKENS, TTFT
from ki2api.server.accounting import outcome_of, trace_of

__all__ = ["Observer", "route_label"]

access_log = logging.getLogger("ki2api.access")

_ROUTES = frozenset(
    {
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/responses",
        "/v1/models",
        "/health",
        "/metrics",
        "/api/hello",
    }
)
_MODEL_LABEL_MAX = 80


def route_label(path: str) -> str:
    """The route a path belongs to: a bounded set of label values (never a client's path)."""
    if path in _ROUTES:
        return path
    if path.startswith("/v1/responses/"):
        return "/v1/responses/{id}"
    if path.startswith("/v1/models/"):
        return "/v1/models/{id}"
    return "other"


# A metric's child per label values, found once: `labels()` checks and locks on every call.
# The label values are bounded (routes, offered models, outcomes, key names); the cap is a
# backstop.
_CHILDREN: dict[tuple[object, ...], Any] = {}
_CHILDREN_MAX = 10_000


def _child(metric: Any, *values: str) -> Any:
    key = (id(metric), *values)
    child = _CHILDREN.get(key)
    if child is None:
        if len(_CHILDREN) >= _CHILDREN_MAX:
            _CHILDREN.clear()
        child = _CHILDREN[key] = metric.labels(*values)
    return child


class Observer:
    """A finished request's metrics and access line."""

    def __init__(self, *, json_access_log: bool) -> None:
        self._json = json_access_log

    def finish(
        self, scope: Scope, status: int, duration: float, ttft: float | None, failed: str | None
    ) -> None:
        trace = trace_of(scope)
        route = route_label(str(scope.get("path", "")))
        model = (trace.model or "")[:_MODEL_LABEL_MAX] if trace is not None else ""
        key = _key_label(trace.client_key) if trace is not None else ""
        outcome = (trace.outcome if trace is not None else None) or failed or outcome_of(status)
        _child(REQUESTS, route, model, outcome, key).inc()
        if trace is not None:
            _child(DURATION, route, model).observe(duration)
            if ttft is not None:
                _child(TTFT, route, model).observe(ttft)
            if trace.input_tokens and outcome == "ok":  # tokens of answered requests only
                _child(TOKENS, "in", model, key).inc(trace.input_tokens)
            if trace.output_tokens and outcome == "ok":
                _child(TOKENS, "out", model, key).inc(trace.output_tokens)
        if self._json:
            fields = _access_fields(scope, trace, status, outcome, duration, ttft)
            access_log.info("%s %s %d", scope.get("method", ""), route, status, extra=fields)


def _access_fields(
    scope: Scope,
    trace: RequestTrace | None,
    status: int,
    outcome: str,
    duration: float,
    ttft: float | None,
) -> dict[str, object]:
    """The request's fields of its JSON log line: names and numbers, never content or keys."""
    state = scope.get("state") or {}
    fields: dict[str, object] = {
        "request_id": state.get("request_id"),
        "method": scope.get("method"),
        "route": route_label(str(scope.get("path", ""))),
        "status": status,
        "outcome": outcome,
        "duration_ms": round(duration * 1000, 1),
    }
    if ttft is not None:
        fields["ttft_ms"] = round(ttft * 1000, 1)
    if trace is not None:
        fields.update(
            model=trace.model,
            stream=trace.stream,
            account=trace.account_id,
            key=trace.client_key,
            attempts=trace.attempts,
            tokens_in=trace.input_tokens,
            tokens_out=trace.output_tokens,
        )
    return {"ki2api": fields}


def _key_label(client_key: str) -> str:
    """The key's name, or `invalid` for every wrong key alike (one series, not one per guess)."""
    return "invalid" if client_key.startswith("invalid:") else client_key
