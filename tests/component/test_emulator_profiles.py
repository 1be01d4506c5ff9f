"""The emulator's profile ARNs: ListAvailableProfiles, Identity Center refusals (403) and the
models that need a profile (400), over HTTP (src/kiro_emulator/profiles.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from kiro_emulator import EmulatorConfig
from kiro_emulator.errors import Rejection
from kiro_emulator.profiles import LIST_PROFILES_TARGET, check_profile
from tests.component.test_emulator_kit import SOCIAL_ARN, Emu, chat_body, running

NOT_AUTHORIZED = {"message": "User is not authorized to make this call."}
REQUIRED = "profileArn is required for this request."


def strict_idc(e: Emu, count: int = 1) -> list[dict[str, Any]]:
    r = e.client.post(
        e.base + "/_emulator/accounts",
        json={"count": count, "auth_method": "idc", "strict_profile_arn": True},
    )
    assert r.status_code == 200, r.text
    return list(r.json()["accounts"])


def list_profiles(e: Emu, account: str) -> httpx.Response:
    headers = {**e.auth(account), "x-amz-target": LIST_PROFILES_TARGET}
    headers["content-type"] = "application/x-amz-json-1.0"
    return e.client.post(e.base + "/", content=b"{}", headers=headers)


def test_strict_idc_account_token_file_has_no_arn_and_profiles_list_it() -> None:
    with running(EmulatorConfig(accounts=0)) as e:
        made = strict_idc(e, 2)
        assert all("profileArn" not in a["token_file"] for a in made)
        arns = [a["profile_arn"] for a in made]
        assert arns[0] != arns[1] and all(a.startswith("arn:aws:codewhisperer:") for a in arns)
        for acct, arn in zip(made, arns, strict=True):
            r = list_profiles(e, acct["id"])
            assert r.status_code == 200
            assert [p["arn"] for p in r.json()["profiles"]] == [arn]
            assert r.json()["nextToken"] is None


def test_list_profiles_needs_a_live_token() -> None:
    with running(EmulatorConfig(accounts=1)) as e:
        r = e.client.post(
            e.base + "/", content=b"{}", headers={"x-amz-target": LIST_PROFILES_TARGET}
        )
        assert r.status_code == 403
        assert r.json()["message"] == "The bearer token included in the request is invalid."


@pytest.mark.parametrize(
    ("arn", "status"),
    [(None, 403), (SOCIAL_ARN, 403), ("own", 200)],
    ids=["missing", "shared-placeholder", "own"],
)
def test_strict_idc_chat_usage_and_mcp(arn: str | None, status: int) -> None:
    with running(EmulatorConfig(accounts=0)) as e:
        acct = strict_idc(e)[0]
        sent = acct["profile_arn"] if arn == "own" else arn
        r = e.chat(body=chat_body("hi", profile_arn=sent), account=acct["id"])
        assert r.status_code == status
        params = {"origin": "AI_EDITOR", "resourceType": "AGENTIC_REQUEST"}
        if sent:
            params["profileArn"] = sent
        usage = e.client.get(e.base + "/getUsageLimits", params=params, headers=e.auth(acct["id"]))
        assert usage.status_code == status
        mcp_headers = {**e.auth(acct["id"]), **({"x-amzn-kiro-profile-arn": sent} if sent else {})}
        call = {
            "jsonrpc": "2.0",
            "id": "1",
            "method": "tools/call",
            "params": {"name": "web_search", "arguments": {"query": "q"}},
        }
        mcp = e.client.post(e.base + "/mcp", json=call, headers=mcp_headers)
        assert mcp.status_code == status
        if status == 403:
            for answer in (r, usage, mcp):
                assert answer.json() == NOT_AUTHORIZED
                assert answer.headers["x-amzn-errortype"] == "AccessDeniedException"


def test_non_strict_idc_account_still_chats_without_arn() -> None:
    with running(EmulatorConfig(accounts=1, auth_method="idc")) as e:
        assert e.chat(body=chat_body("hi", profile_arn=None)).status_code == 200


def test_create_rejects_a_non_boolean_strict_flag() -> None:
    with running(EmulatorConfig(accounts=0)) as e:
        r = e.client.post(e.base + "/_emulator/accounts", json={"strict_profile_arn": "yes"})
        assert r.status_code == 400


@pytest.mark.parametrize(
    ("model", "arn", "refused"),
    [
        ("claude-sonnet-5", None, True),
        ("claude-opus-5", None, True),
        ("claude-sonnet-5", "arn:aws:codewhisperer:us-east-1:123456789012:profile/ABC", False),
        ("claude-sonnet-4.5", None, False),
    ],
)
def test_models_that_need_a_profile(model: str, arn: str | None, refused: bool) -> None:
    with running(EmulatorConfig(accounts=1, auth_method="idc")) as e:
        account = e.state.accounts["acct-1"]
        if refused:
            with pytest.raises(Rejection) as info:
                check_profile(account, arn, model)
            assert info.value.status == 400 and info.value.body["message"] == REQUIRED
        else:
            check_profile(account, arn, model)
