"""A real AccountPool of N accounts (real KiroCredentials, a real SQLite store in a tmp dir) whose
token refreshes go to an in-process stand-in of the Kiro auth service (httpx.MockTransport).

Account `p<i>` starts with the access token `tok-p<i>-0`; its n-th refresh hands out
`tok-p<i>-<n>`. Meant for the backend driven by `tests/support/fake_transport.py`.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from ki2api.kiro.accounts.policy import Candidate, PolicyConfig
from ki2api.kiro.accounts.pool import AccountPool
from ki2api.kiro.login.credentials import CredentialSource, KiroCredentials
from ki2api.kiro.login.file_store import TokenSet
from ki2api.kiro.login.token_home import MemoryTokenHome
from ki2api.settings import Settings
from ki2api.state.base import AccountRecord, Health
from ki2api.state.sqlite import SQLiteStore

__all__ = ["FAST_POLICY", "PROFILE_ARN", "FakeAuth", "SlotAccount", "fake_pool", "health"]

PROFILE_ARN = "arn:aws:codewhisperer:us-east-1:111111111111:profile/TEST"
# the pool's rules with millisecond rests and retry delays
FAST_POLICY = PolicyConfig(
    throttle_base_s=0.05, error_base_s=0.05, retry_delay_base_s=0.001, retry_delay_max_s=0.002
)


class FakeAuth:
    """`POST /refreshToken`: a new access token per refresh of each account."""

    def __init__(self) -> None:
        self.refreshes: Counter[str] = Counter()

    def handler(self, request: httpx.Request) -> httpx.Response:
        refresh_token = json.loads(request.content)["refreshToken"]
        account = refresh_token.removeprefix("ref-")
        self.refreshes[account] += 1
        token = f"tok-{account}-{self.refreshes[account]}"
        return httpx.Response(200, json={"accessToken": token, "expiresIn": 3600})


async def fake_pool(
    where: Path, count: int = 2, *, policy: PolicyConfig = FAST_POLICY
) -> tuple[AccountPool, FakeAuth, httpx.AsyncClient]:
    """The pool, the auth stand-in and the httpx client under the credentials (close it)."""
    auth = FakeAuth()
    http = httpx.AsyncClient(transport=httpx.MockTransport(auth.handler))
    settings = dataclasses.replace(Settings(), kiro_auth_base="https://auth.test")
    store = SQLiteStore.open(where / "pool.sqlite3")
    expires = datetime.now(UTC) + timedelta(hours=1)
    for i in range(count):
        record = AccountRecord(
            id=f"p{i}", source="env", label="test", auth_method="social", machine_id="0" * 64
        )
        await store.upsert_account(record)

    def credentials_for(record: AccountRecord) -> KiroCredentials:
        tokens = TokenSet(f"tok-{record.id}-0", f"ref-{record.id}", PROFILE_ARN, expires)
        return KiroCredentials(
            CredentialSource("env", None, "test"),
            settings,
            http,
            account_id=record.id,
            home=MemoryTokenHome(tokens),
        )

    pool = AccountPool(store, credentials_for, policy=policy)
    await pool.load()
    return pool, auth, http


def health(pool: AccountPool, account_id: str) -> Health:
    account = pool.get(account_id)
    assert account is not None
    return account.health


@dataclasses.dataclass(eq=False)
class SlotAccount:
    """The part of a pool account a `SlotGate` uses: its record, in-flight count, candidate."""

    record: AccountRecord
    inflight: int = 0

    @property
    def id(self) -> str:
        return self.record.id

    def candidate(self) -> Candidate:
        return Candidate(id=self.id, inflight=self.inflight)
