"""The Prometheus metrics the gateway counts as it works: one definition of each.

The server (`server/observe.py`: one update per finished request), the backend (an attempt, a
failover) and the logins (a refresh) increment them; `server/routes_metrics.py` serves them with
the account gauges it reads from the pool at scrape time. With `serve --workers N` the parent
sets `PROMETHEUS_MULTIPROC_DIR` before the workers start, so every worker writes its values to
files there (prometheus-client's multiprocess mode) and a scrape on any worker sums them all.
Label values are bounded: routes from a fixed set, models as the gateway names them, key names,
error kinds. Never a key, a token or any content.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "ATTEMPTS",
    "DURATION",
    "FAILOVERS",
    "REFRESHES",
    "REQUESTS",
    "STORE_FAILURES",
    "STORE_UP",
    "STREAMS_OPEN",
    "TOKENS",
    "TTFT",
]

_TIME_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)

REQUESTS = Counter(
    "ki2api_requests",
    "Finished client requests by route, model, outcome (ok or an error kind) and key name",
    ["route", "model", "outcome", "key"],
)
TTFT = Histogram(
    "ki2api_time_to_first_token_seconds",
    "Streaming chat requests: from arrival to the first content sent (the 200's first bytes)",
    ["route", "model"],
    buckets=_TIME_BUCKETS,
)
DURATION = Histogram(
    "ki2api_request_duration_seconds",
    "Chat requests: from arrival to the last byte of the answer",
    ["route", "model"],
    buckets=_TIME_BUCKETS,
)
ATTEMPTS = Counter(
    "ki2api_upstream_attempts",
    "Upstream attempts (one per account tried) by result: ok or the error kind",
    ["result"],
)
FAILOVERS = Counter(
    "ki2api_failovers", "New attempts after a failed one, by the failure's kind", ["reason"]
)
TOKENS = Counter(
    "ki2api_tokens",
    "Tokens by direction (in, out), model and key name",
    ["direction", "model", "key"],
)
REFRESHES = Counter("ki2api_token_refreshes", "Kiro token refreshes by result", ["result"])
STREAMS_OPEN = Gauge(
    "ki2api_streams_open", "Streaming answers being sent now", multiprocess_mode="livesum"
)
STORE_UP = Gauge(
    "ki2api_store_up",
    "1 while the state store answers, 0 while it is away (the lowest of the workers')",
    multiprocess_mode="livemin",
)
STORE_FAILURES = Counter(
    "ki2api_store_errors",
    "State store calls that failed because its server was away, by operation",
    ["op"],
)
