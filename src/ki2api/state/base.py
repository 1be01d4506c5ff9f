"""The state store interface: what the gateway remembers, and what several processes share.

Everything the pool and the credentials need to agree on across workers (and, later, across
replicas) goes through `StateStore`: accounts and their tokens, health (cooldowns, quota,
disablement), named locks with a time-to-live (one token refresh per account), and the usage
log. The SQLite implementation (`state.sqlite.SQLiteStore`) is the default; the Redis one
(`state.redis_store.RedisStore`, KI2API_STORE=redis://…) implements the same protocol for
replicas on several machines, without touching the pool (`state.open_store` picks one).

Rules every implementation keeps:
* times are epoch seconds (float, UTC); ids are short printable strings;
* `save_tokens` is compare-and-set on `version` so two writers never silently overwrite
  each other; a successful save bumps the version by one;
* a lock is held by one owner until it is released or its ttl runs out;
* a stored response is opaque bytes with an expiry: never returned once expired;
* `changed()` is cheap (called once per request): True when another process (or connection)
  wrote anything since the previous call by this store object (at least: accounts, tokens or
  health, what the pool reloads; Redis counts only those);
* no method logs or raises a token or secret; reprs hide them;
* client keys are stored by the SHA-256 of the key only (state/client_key_rules.py); their
  counters (`admit_client_key`, and the tokens of the usage rows naming a key, charged by
  `record_usage`) change atomically for every worker: a Redis store uses one script or MULTI;
* a slot lease (`take_slot`) counts one request in flight on an account for every worker: it is
  held until `free_slot`, or until its holder's process is gone (same host: the pid is checked
  when an account looks full), or until it expires (`renew_slots` keeps a live holder's leases).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ki2api.state.client_key_rules import Verdict

__all__ = [
    "FILE_SOURCES",
    "ClientKeyRecord",
    "SlotHolder",
    "SlotTake",
    "USAGE_GROUPS",
    "AccountRecord",
    "Health",
    "StateStore",
    "StoredTokens",
    "UsageRow",
    "UsageSummary",
]


# Accounts whose tokens live in a token file (discovered, or added with `accounts add --link`):
# the file is read before each refresh and written back, so the program that wrote it (the Kiro
# IDE, kiro-cli) and the gateway share one login instead of two diverging copies.
FILE_SOURCES = frozenset({"file", "linked"})


@dataclass(frozen=True)
class AccountRecord:
    """One Kiro account the pool may use. Tokens live in `StoredTokens`; the one secret here is a
    password inside `proxy`, kept out of the repr and never shown (core/proxy.py masks it)."""

    id: str  # stable, printable: "acct-1", "home", "k-3f9a2c1d"
    source: str  # "store" (added/imported, tokens kept in the store) | "file" | "env" | "linked"
    label: str  # human description: "token file ~/.aws/sso/cache/kiro-auth-token.json"
    auth_method: str  # "social" | "idc"
    machine_id: str  # 64 hex, random at creation, kept for the account's lifetime
    path: str | None = None  # the token file of a "file" or "linked" account
    priority: int = 0  # higher is preferred
    weight: int = 1  # share among equals (>= 1)
    enabled: bool = True
    disabled_reason: str | None = None  # "suspended", "invalid_grant", "disabled by user", ...
    created_at: float = 0.0
    # Its own outbound proxy URL (core/proxy.py); None: the pool's default. The URL may hold a
    # password: never shown (ProxyURL.masked) and kept out of the repr.
    proxy: str | None = field(default=None, repr=False)
    # Its own concurrency cap and pace (kiro/accounts/pacing.py); None: the pool's default
    # (KI2API_ACCOUNT_MAX_INFLIGHT, KI2API_ACCOUNT_PACE_RPM); 0: none
    max_inflight: int | None = None
    pace_rpm: float | None = None


@dataclass(frozen=True)
class StoredTokens:
    """The token JSON of one account (the shape of `kiro-auth-token.json`, camelCase keys,
    IdC logins also carrying `clientId` / `clientSecret` inline), and its version."""

    data: Mapping[str, Any] = field(repr=False)
    version: int  # 1 for the first save, +1 on every successful save
    synced_mtime_ns: int | None = None  # the token file version these tokens match (file accounts)
    updated_at: float = 0.0


@dataclass(frozen=True)
class Health:
    """What the pool has learnt about an account. Defaults mean "healthy, nothing known"."""

    account_id: str
    cooldown_until: float = 0.0  # not to be used before this time
    reason: str | None = None  # why it is cooling down: "throttled", "quota", "unavailable", ...
    strikes: int = 0  # consecutive failures (exponent of the backoff); 0 after a success
    quota_remaining: float | None = None  # from getUsageLimits
    quota_limit: float | None = None
    quota_reset_at: float | None = None
    quota_checked_at: float | None = None
    last_error: str | None = None  # a safe, short message
    last_ok_at: float | None = None
    # The strike series (kiro/accounts/policy.py): what kind of failure `strikes` counts and when
    # the last one was counted. Strikes of another kind, or older than a few seconds, lapse.
    strike_reason: str | None = None
    struck_at: float | None = None
    # Trouble signs (kiro/accounts/trouble.py): no Claude model is sent to the account before
    # this time (a likely location block); its last suspension as JSON (when, and the shape of
    # the requests before it: model, bytes, concurrency; never content)
    claude_rest_until: float = 0.0
    suspension: str | None = None


@dataclass(frozen=True)
class UsageRow:
    """One finished client request (exactly one row per request, whatever its outcome)."""

    at: float  # when the request arrived
    client_key: str  # a fingerprint of the client's API key (never the key itself)
    account_id: str | None  # the account that served it (None: none was reached)
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    latency_ms: float  # arrival to last byte
    outcome: str  # "ok" or an ErrorKind value ("rate_limited", "cancelled", ...)
    endpoint: str = ""  # "/v1/chat/completions", "/v1/messages", "/v1/responses"
    stream: bool = False
    attempts: int = 1  # upstream attempts (accounts tried) for this request
    ttft_ms: float | None = None  # arrival to the answer's first byte (streamed or not)
    status: int | None = None  # the HTTP status sent (None: none was sent)


# What the usage log can be summed up by: name -> UsageRow field.
USAGE_GROUPS = {
    "account": "account_id",
    "key": "client_key",
    "model": "model",
    "outcome": "outcome",
}


@dataclass(frozen=True)
class UsageSummary:
    """The usage rows of one group (an account, a client key, a model or an outcome)."""

    group: str | None
    requests: int
    ok: int
    input_tokens: int
    output_tokens: int
    avg_latency_ms: float


@dataclass(frozen=True)
class ClientKeyRecord:
    """A client key of `ki2api keys`: its name (what the usage log records), the SHA-256 of the
    key (the key itself is shown once and never stored), its state and limits (None: none)."""

    id: str  # "ck-<12 hex>", stable across rotations
    name: str  # unique, printable (client_key_rules.check_name)
    key_hash: str = field(repr=False)  # 64 hex
    hint: str  # "sk-ki2api-…abcd": enough to tell keys apart, not to use one
    state: str = "active"  # "active" | "disabled" | "revoked" (final)
    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute (counted after each answer)
    daily_tokens: int | None = None  # tokens per UTC day
    monthly_requests: int | None = None  # requests per UTC calendar month
    models: str | None = None  # comma-separated fnmatch patterns; None: every model
    expires_at: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True)
class SlotHolder:
    """Who holds slot leases: one gateway process (a worker of `serve --workers N`)."""

    host: str  # socket.gethostname(): a pid is only checked on its own host
    pid: int


@dataclass(frozen=True)
class SlotTake:
    """The answer of `take_slot`. `taken`: the lease is held. Otherwise `wait_s` is the time
    until the account's pace allows its next start, or None when it is at its cap (a slot frees
    when a holder frees one: there is no time to give)."""

    taken: bool
    wait_s: float | None = None


class StateStore(Protocol):
    # accounts ---------------------------------------------------------------------------------
    async def list_accounts(self) -> list[AccountRecord]: ...
    async def get_account(self, account_id: str) -> AccountRecord | None: ...
    async def upsert_account(self, record: AccountRecord) -> None:
        """Insert, or update every field of the account with this id (machine_id and
        created_at are kept from the first insert)."""

    async def remove_account(self, account_id: str) -> bool:
        """Forget the account, its tokens and its health; False if it did not exist."""

    async def set_enabled(self, account_id: str, enabled: bool, reason: str | None) -> bool: ...

    # tokens -----------------------------------------------------------------------------------
    async def load_tokens(self, account_id: str) -> StoredTokens | None: ...
    async def save_tokens(
        self,
        account_id: str,
        data: Mapping[str, Any],
        *,
        expected_version: int | None,
        synced_mtime_ns: int | None = None,
    ) -> int | None:
        """Store `data` if the stored version is still `expected_version` (None: the caller
        expects no tokens stored yet). Returns the new version, or None when another writer
        got there first (the caller re-reads and decides)."""

    # health -----------------------------------------------------------------------------------
    async def health(self) -> dict[str, Health]:
        """Health of every account that has any (accounts without a row are healthy)."""

    async def put_health(self, health: Health) -> None: ...

    async def changed(self) -> bool: ...

    # locks ------------------------------------------------------------------------------------
    async def try_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take the lock if it is free, expired, or already ours (then extend it)."""

    async def unlock(self, name: str, owner: str) -> None:
        """Release the lock if `owner` holds it (otherwise do nothing)."""

    # slot leases: requests in flight per account, counted across workers ----------------------
    async def take_slot(
        self,
        account_id: str,
        lease_id: str,
        holder: SlotHolder,
        *,
        cap: int,
        interval_s: float,
        now: float,
        ttl_s: float,
    ) -> SlotTake:
        """Atomically: drop expired leases; if the account holds fewer than `cap` live leases
        (cap 0: no cap; the leases of dead pids of this host do not count) and its last start
        is at least `interval_s` before `now` (0: no pace), add lease `lease_id` (expiring at
        `now + ttl_s`) and note `now` as its last start. A Redis store does the same in one
        script (a sorted set per account, scored by expiry)."""

    async def free_slot(self, account_id: str, lease_id: str) -> None:
        """Drop the lease (nothing happens when it is gone already)."""

    async def renew_slots(self, holder: SlotHolder, expires_at: float) -> None:
        """Extend every lease of `holder` to `expires_at` (called well within the ttl)."""

    async def slots_in_use(self, now: float) -> dict[str, int]:
        """Live leases per account id (accounts without any are left out)."""

    # client keys ------------------------------------------------------------------------------
    async def create_client_key(self, record: ClientKeyRecord) -> bool:
        """Insert the key; False when its name (or hash) is taken already."""

    async def list_client_keys(self) -> list[ClientKeyRecord]: ...
    async def get_client_key(self, name: str) -> ClientKeyRecord | None: ...
    async def client_key_by_hash(self, key_hash: str) -> ClientKeyRecord | None: ...
    async def update_client_key(self, record: ClientKeyRecord) -> bool:
        """Replace the limits, models and expiry of the key of this id (not revoked ones)."""

    async def set_client_key_state(self, name: str, state: str) -> bool:
        """disable / enable / revoke: False when the key is missing or revoked already."""

    async def rotate_client_key(self, name: str, key_hash: str, hint: str) -> bool:
        """A new secret for the key, same name, limits and counters; the old one stops at once.
        False when the key is missing or revoked."""

    async def admit_client_key(self, key_id: str, now: float) -> Verdict:
        """Atomically: read the key and its counters; when `decide` (client_key_rules) lets one
        more request start (and the key is active and unexpired), count it in its minute, day
        and month windows. The verdict says why not otherwise."""

    # usage log --------------------------------------------------------------------------------
    async def record_usage(
        self, rows: Sequence[UsageRow], *, batch: str | None = None, again: bool = False
    ) -> None:
        """Append the rows; the tokens of a row whose `client_key` names a client key are added
        to that key's minute and day counters, in the same transaction. `batch` names the rows
        as one write; `again`: the same batch once more, after a write whose outcome is not
        known (its reply was lost): nothing is done if that batch is already recorded."""

    async def usage_count(self) -> int: ...
    async def usage_rows(self, *, limit: int = 100) -> list[UsageRow]:
        """The newest `limit` rows, oldest first."""

    async def usage_summary(self, *, since: float, by: str) -> list[UsageSummary]:
        """Rows since `since`, summed per group (`by` is a key of USAGE_GROUPS), busiest first."""

    async def usage_since(
        self, since: float, *, key: str | None = None, limit: int = 200_000
    ) -> list[UsageRow]:
        """Rows with `at >= since` (only those of client key `key` when given), oldest first;
        at most the newest `limit` of them (the console's series: bounded work)."""

    # stored responses (the OpenAI Responses API's `store` / `previous_response_id`) -----------
    async def put_response(self, response_id: str, record: bytes, expires_at: float) -> None:
        """Keep `record` (opaque bytes) under `response_id` until `expires_at`; an existing
        record of that id is replaced. Expired records may be deleted here."""

    async def get_response(self, response_id: str, now: float) -> bytes | None:
        """The record, or None when there is none or it expired before `now`."""

    async def delete_response(self, response_id: str) -> bool:
        """Forget the record; False if there was none (an expired one counts as none)."""

    async def aclose(self) -> None: ...
