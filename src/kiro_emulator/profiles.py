"""Profile ARNs: `ListAvailableProfiles` and the per-account checks (docs/kiro-protocol.md §1.3).

Every account has its own profile ARN (`Account.profile_arn`; per-account values differ). Social
token files carry it; IdC token files do not (as real ones). `POST /` with
`x-amz-target: AmazonCodeWhispererService.ListAvailableProfiles` answers
`{"profiles": [{"arn", "profileName"}], "nextToken": null}` for the bearer's
account, as the Q API does for Identity Center logins (AIClient-2-API PR #702).

Accounts created with `"strict_profile_arn": true` behave like 2026 Identity Center logins:
chat, usage and `/mcp` calls without a profile ARN get 403 "User is not authorized to make this
call."; one that is not the account's own (a shared placeholder) gets the same 403. For every
account, the models in `MODELS_NEEDING_PROFILE` without a profile ARN get 400 "profileArn is
required for this request." (Builder ID reports for sonnet-5 / opus-5).
"""

from __future__ import annotations

from typing import Any

from .errors import PROFILE_ARN_REQUIRED, Rejection
from .state import Account

__all__ = [
    "LIST_PROFILES_TARGET",
    "MODELS_NEEDING_PROFILE",
    "NOT_AUTHORIZED",
    "check_profile",
    "list_profiles_page",
]

LIST_PROFILES_TARGET = "AmazonCodeWhispererService.ListAvailableProfiles"
MODELS_NEEDING_PROFILE = frozenset({"claude-sonnet-5", "claude-opus-5"})
NOT_AUTHORIZED = Rejection(
    403, {"message": "User is not authorized to make this call."}, "AccessDeniedException"
)


def check_profile(account: Account, arn: str | None, model_id: str | None = None) -> None:
    """Raise the real refusal when `arn` (as sent; None when absent) does not fit `account`."""
    if account.strict_profile_arn:
        if not arn:
            raise NOT_AUTHORIZED.because("Identity Center account sent no profile ARN")
        if arn != account.profile_arn:
            raise NOT_AUTHORIZED.because("profile ARN is not this account's")
    if not arn and model_id in MODELS_NEEDING_PROFILE:
        raise PROFILE_ARN_REQUIRED.because(f"{model_id} needs a profile ARN")


def list_profiles_page(account: Account) -> dict[str, Any]:
    arn = account.profile_arn or ""
    region = arn.split(":")[3] if arn.count(":") >= 5 else "us-east-1"
    return {
        "profiles": [{"arn": arn, "profileName": f"KiroProfile-{region}"}],
        "nextToken": None,
    }
