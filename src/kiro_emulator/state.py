"""Accounts, tokens, counters and the request log of one emulator instance (no globals)."""

from __future__ import annotations

import base64
import random
import string
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from . import credentials as cred
from .behaviour import Behaviour
from .config import EmulatorConfig
from .errors import Rejection
from .regions import q_region_of, q_region_of_login

__all__ = ["Account", "Behaviour", "Counters", "EmulatorState", "Registration"]

REFRESH_INVALID = Rejection(
    400,
    {
        "error": "invalid_grant",
        "error_description": "Invalid refresh token provided",
        "message": "Invalid refresh token provided",
    },
    "InvalidGrantException",
)
_REGISTRATION_TTL_S = 90 * 86_400


@dataclass
class Counters:
    chat_requests: int = 0  # authenticated chat calls received
    served: int = 0  # chat calls answered with a stream
    refreshes: int = 0  # successful token refreshes
    refresh_failures: int = 0
    streams_now: int = 0
    streams_max: int = 0
    faults: int = 0  # chat calls that got an injected fault (behaviour or random)


@dataclass(frozen=True)
class Registration:
    client_id: str
    client_secret: str = field(repr=False)
    expires_at: float
    id_hash: str


@dataclass(eq=False)
class Account:
    id: str
    auth_method: str  # "social" | "idc"
    behaviour: Behaviour
    profile_arn: str | None
    registration: Registration | None
    access_token: str = field(default="", repr=False)
    access_expires: float = 0.0
    refresh_token: str = field(default="", repr=False)
    counters: Counters = field(default_factory=Counters)
    fault_rng: random.Random = field(default_factory=random.Random, repr=False)
    strict_profile_arn: bool = False  # 403 without its own profile ARN (profiles.py)
    api_key: str | None = field(default=None, repr=False)  # a Kiro API key (ksk_…), if given

    @property
    def q_region(self) -> str:
        """The Q region this login must call (regions.py)."""
        return q_region_of(self.profile_arn, self.behaviour.region)


def _key_text(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(48))


def _norm_auth(method: str) -> str:
    m = method.strip().lower()
    if m in ("social", "idc"):
        return m
    raise ValueError("auth_method must be 'social' or 'idc'")


class EmulatorState:
    """Everything one emulator app remembers. Clock and randomness are injected."""

    def __init__(
        self,
        config: EmulatorConfig,
        clock: Callable[[], float],
        sleep: Callable[[float], Any],
    ) -> None:
        self.config = config
        self.clock = clock
        self.sleep = sleep
        self.rng = random.Random(config.seed)
        self.accounts: dict[str, Account] = {}
        self.requests: deque[dict[str, Any]] = deque(maxlen=max(1, config.request_log_size))
        self._access: dict[str, tuple[str, float]] = {}  # access token -> (account id, expiry)
        self._refresh: dict[str, str] = {}  # live refresh token -> account id
        self._api_keys: dict[str, str] = {}  # live API key -> account id (never expires)

    # ids and secrets -------------------------------------------------------------------------
    def _b64(self, nbytes: int) -> str:
        return base64.urlsafe_b64encode(self.rng.randbytes(nbytes)).decode().rstrip("=")

    def new_uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def new_tool_use_id(self) -> str:
        return "tooluse_" + self._b64(16)  # 16 bytes -> 22 base64url characters

    def _profile_arn(self, rng: random.Random | None = None, region: str = "us-east-1") -> str:
        rng = rng or self.rng
        digits = "".join(rng.choice(string.digits) for _ in range(12))
        ident = "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(12))
        return f"arn:aws:codewhisperer:{q_region_of_login(region)}:{digits}:profile/{ident}"

    # accounts --------------------------------------------------------------------------------
    def add_accounts(
        self,
        count: int,
        auth_method: str,
        behaviour: Mapping[str, Any] | None = None,
        *,
        strict_profile_arn: bool = False,
        api_key: bool = False,
        registration: Registration | None = None,
    ) -> list[Account]:
        method = _norm_auth(auth_method)
        base = Behaviour().updated(behaviour or {})
        made = []
        for _ in range(count):
            acct_id = f"acct-{len(self.accounts) + 1}"
            reg = registration
            if method == "idc" and reg is None:
                exp = self.clock() + _REGISTRATION_TTL_S
                reg = Registration(self._b64(16), "sec" + self._b64(96), exp, cred.client_id_hash())
            # IdC accounts have one too, not in their token file; drawn from their own
            # generator so the emulator's other random values stay as they were
            own = random.Random(f"{self.config.seed}/{acct_id}/profile")
            where = base.region
            profile = (
                self._profile_arn(region=where)
                if method == "social"
                else self._profile_arn(own, region=where)
            )
            acct = Account(acct_id, method, replace(base), profile, reg)
            acct.strict_profile_arn = strict_profile_arn
            self.reseed_faults(acct)
            acct.refresh_token = self._new_refresh(acct_id)
            self.issue_access(acct)
            if api_key:  # its own generator too: other accounts' values stay as they were
                key_rng = random.Random(f"{self.config.seed}/{acct_id}/api-key")
                acct.api_key = "ksk_" + _key_text(key_rng)
                self._api_keys[acct.api_key] = acct_id
            self.accounts[acct_id] = acct
            made.append(acct)
        return made

    def set_behaviour(self, account: Account, changes: Mapping[str, Any]) -> None:
        """Apply validated `changes` (ValueError on a bad one); a new `fault_seed` reseeds."""
        account.behaviour = account.behaviour.updated(changes)
        if "fault_seed" in changes:
            self.reseed_faults(account)

    def reseed_faults(self, account: Account) -> None:
        """Restart the account's fault sequence: from `fault_seed`, else from the emulator's
        seed and the account id (so one account's traffic never shifts another's faults)."""
        seed = account.behaviour.fault_seed
        default = f"{self.config.seed}/{account.id}"
        account.fault_rng = random.Random(default if seed is None else seed)

    def _new_refresh(self, account_id: str) -> str:
        token = "aor" + self._b64(96)
        self._refresh[token] = account_id
        return token

    def issue_access(self, account: Account) -> None:
        ttl = account.behaviour.token_ttl_s
        now = self.clock()
        expires = now + (self.config.token_ttl_s if ttl is None else ttl)
        token = "aoa" + self._b64(96)
        if len(self._access) > 1000 + 4 * len(self.accounts):
            self._access = {k: v for k, v in self._access.items() if v[1] > now}
        self._access[token] = (account.id, expires)
        account.access_token, account.access_expires = token, expires

    def authenticate(self, token: str | None) -> Account | None:
        """The account owning a live access token or API key; None if unknown or expired."""
        by_key = self._api_keys.get(token or "")
        if by_key is not None:
            return self.accounts.get(by_key)
        entry = self._access.get(token or "")
        if entry is None or entry[1] <= self.clock():
            return None
        return self.accounts.get(entry[0])

    def expire_tokens(self, account: Account) -> None:
        """Make every access token of `account` expired now (a test hook)."""
        past = self.clock() - 1
        for token, (acct_id, _) in list(self._access.items()):
            if acct_id == account.id:
                self._access[token] = (acct_id, past)
        account.access_expires = past

    def revoke_api_key(self, account: Account) -> bool:
        """Forget the account's API key (revoked in Kiro); False when it had none."""
        if account.api_key is None:
            return False
        self._api_keys.pop(account.api_key, None)
        return True

    # refresh ---------------------------------------------------------------------------------
    def account_for_refresh(self, refresh_token: str, auth_method: str) -> Account:
        acct = self.accounts.get(self._refresh.get(refresh_token, ""))
        if acct is None or acct.auth_method != auth_method:
            raise REFRESH_INVALID.because("unknown or revoked refresh token")
        return acct

    def refresh(self, account: Account) -> None:
        """Issue a new access token (old ones stay valid until they expire)."""
        if account.behaviour.refresh_fails:
            account.counters.refresh_failures += 1
            raise REFRESH_INVALID.because("behaviour refresh_fails")
        account.counters.refreshes += 1
        if account.behaviour.rotate_refresh_token:
            self._refresh.pop(account.refresh_token, None)
            account.refresh_token = self._new_refresh(account.id)
        self.issue_access(account)

    # files -----------------------------------------------------------------------------------
    def token_file(self, account: Account) -> dict[str, Any]:
        if account.registration is None:
            return cred.social_token_file(
                account.access_token,
                account.refresh_token,
                account.profile_arn or "",
                account.access_expires,
            )
        return cred.idc_token_file(
            account.access_token,
            account.refresh_token,
            account.access_expires,
            account.registration.id_hash,
            account.behaviour.region,
        )

    def client_registration(self, account: Account) -> dict[str, Any] | None:
        reg = account.registration
        if reg is None:
            return None
        return cred.registration_file(reg.client_id, reg.client_secret, reg.expires_at)

    def describe(self, account: Account) -> dict[str, Any]:
        return {
            "id": account.id,
            "auth_method": account.auth_method,
            "profile_arn": account.profile_arn,
            "strict_profile_arn": account.strict_profile_arn,
            "api_key": account.api_key,
            "api_key_live": account.api_key is not None and account.api_key in self._api_keys,
            "behaviour": asdict(account.behaviour),
            "token_file": self.token_file(account),
            "client_registration": self.client_registration(account),
        }

    # counters --------------------------------------------------------------------------------
    def stream_started(self, account: Account) -> None:
        c = account.counters
        c.streams_now += 1
        c.streams_max = max(c.streams_max, c.streams_now)

    def stream_ended(self, account: Account) -> None:
        account.counters.streams_now -= 1

    def stats(self) -> dict[str, Any]:
        return {"accounts": {a.id: asdict(a.counters) for a in self.accounts.values()}}

    def reset(self) -> None:
        """Forget requests and counters and restart fault sequences (accounts and tokens stay)."""
        self.requests.clear()
        for acct in self.accounts.values():
            now = acct.counters.streams_now
            acct.counters = Counters(streams_now=now, streams_max=now)
            self.reseed_faults(acct)
