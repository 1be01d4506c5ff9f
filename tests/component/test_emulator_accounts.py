"""Tokens, refresh (social and IdC), account faults, model list, usage and introspection."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from kiro_emulator import EmulatorConfig
from tests.component.test_emulator_kit import (
    BEARER_BODY,
    Emu,
    GatedSleep,
    chat_body,
    emu,
    events,
    running,
    text_of,
)

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
# the real 2026 list (docs/kiro-protocol.md §4.3): sonnet-5 and opus-5 are new, the legacy
# upper-case ids are accepted but no longer listed
MODEL_IDS = {
    "auto",
    "claude-sonnet-4",
    "claude-sonnet-4.5",
    "claude-sonnet-4.6",
    "claude-sonnet-5",
    "claude-haiku-4.5",
    "claude-opus-4.5",
    "claude-opus-4.6",
    "claude-opus-4.7",
    "claude-opus-4.8",
    "claude-opus-5",
    "deepseek-3.2",
    "glm-5",
    "minimax-m2.1",
    "minimax-m2.5",
    "qwen3-coder-next",
}


def add_accounts(e: Emu, **body: Any) -> list[dict[str, Any]]:
    r = e.client.post(e.base + "/_emulator/accounts", json=body)
    assert r.status_code == 200, r.text
    return list(r.json()["accounts"])


def patch(e: Emu, account: str, **behaviour: Any) -> httpx.Response:
    return e.client.patch(e.base + f"/_emulator/accounts/{account}", json={"behaviour": behaviour})


def social_refresh(e: Emu, token: str) -> httpx.Response:
    return e.client.post(e.base + "/refreshToken", json={"refreshToken": token})


def chat_as(e: Emu, token: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return e.client.post(
        e.base + "/generateAssistantResponse",
        json=body or chat_body("hi"),
        headers={"Authorization": f"Bearer {token}"},
    )


def assert_bearer_invalid(r: httpx.Response) -> None:
    assert (r.status_code, r.json()) == (403, BEARER_BODY)
    assert r.headers["x-amzn-errortype"] == "AccessDeniedException"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer aoaNOPE"}, {"Authorization": "Basic abc"}],
    ids=["missing", "unknown", "not-bearer"],
)
def test_bad_bearer_gets_the_real_403(headers: dict[str, str]) -> None:
    with running() as e:
        r = e.client.post(e.base + "/generateAssistantResponse", json=chat_body(), headers=headers)
        assert_bearer_invalid(r)
        assert e.state.stats()["accounts"]["acct-1"]["chat_requests"] == 0


def test_access_token_expires_after_ttl() -> None:
    with running(EmulatorConfig(token_ttl_s=600)) as e:
        token = e.token()
        e.clock.now += 599
        assert chat_as(e, token).status_code == 200
        e.clock.now += 2
        assert_bearer_invalid(chat_as(e, token))


def test_social_refresh_issues_a_new_token_and_keeps_the_old_one_valid() -> None:
    with running(EmulatorConfig(token_ttl_s=1000)) as e:
        acct = e.state.accounts["acct-1"]
        old_access, refresh = acct.access_token, acct.refresh_token
        e.clock.now += 500
        r = social_refresh(e, refresh)
        assert r.status_code == 200
        body = r.json()
        assert set(body) == {"accessToken", "expiresIn", "profileArn", "refreshToken"}
        assert body["accessToken"].startswith("aoa") and body["accessToken"] != old_access
        assert body["refreshToken"] != refresh  # rotated by default, as real Kiro
        assert body["expiresIn"] == 1000
        assert body["profileArn"] == acct.profile_arn
        assert chat_as(e, old_access).status_code == 200  # still valid until its own expiry
        e.clock.now += 501
        assert_bearer_invalid(chat_as(e, old_access))
        assert chat_as(e, body["accessToken"]).status_code == 200
        assert e.state.stats()["accounts"]["acct-1"]["refreshes"] == 1


def test_rotation_revokes_the_old_refresh_token() -> None:
    with running() as e:  # on by default (docs/kiro-protocol.md §2.3)
        old = e.state.accounts["acct-1"].refresh_token
        new = social_refresh(e, old).json()["refreshToken"]
        assert new.startswith("aor") and new != old
        r = social_refresh(e, old)
        assert r.status_code == 400
        assert "invalid_grant" in r.text and "Invalid refresh token provided" in r.text
        assert social_refresh(e, new).status_code == 200


def test_without_rotation_the_refresh_token_stays_valid() -> None:
    with running() as e:
        old = e.state.accounts["acct-1"].refresh_token
        assert patch(e, "acct-1", rotate_refresh_token=False).status_code == 200
        assert social_refresh(e, old).json()["refreshToken"] == old
        assert social_refresh(e, old).status_code == 200


@pytest.mark.parametrize(
    "case", ["refresh_fails", "unknown", "idc-token-at-social-endpoint"], ids=str
)
def test_social_refresh_failures_are_invalid_grant(case: str) -> None:
    with running() as e:
        token = e.state.accounts["acct-1"].refresh_token
        if case == "refresh_fails":
            patch(e, "acct-1", refresh_fails=True)
        elif case == "unknown":
            token = "aorUNKNOWN"
        else:
            token = add_accounts(e, auth_method="idc")[0]["token_file"]["refreshToken"]
        r = social_refresh(e, token)
        assert r.status_code == 400
        assert "invalid_grant" in r.text and "Invalid refresh token provided" in r.text


def idc_body(e: Emu, account: str, **over: Any) -> dict[str, Any]:
    acct = e.state.accounts[account]
    assert acct.registration is not None
    body = {
        "clientId": acct.registration.client_id,
        "clientSecret": acct.registration.client_secret,
        "grantType": "refresh_token",
        "refreshToken": acct.refresh_token,
    }
    return {**body, **over}


def test_idc_create_token_refresh() -> None:
    with running(EmulatorConfig(accounts=2, auth_method="idc", token_ttl_s=900)) as e:
        r = e.client.post(e.base + "/token", json=idc_body(e, "acct-2"))
        assert r.status_code == 200
        body = r.json()
        assert body["tokenType"] == "Bearer" and body["expiresIn"] == 900
        assert "profileArn" not in body
        assert body["refreshToken"] == e.state.accounts["acct-2"].refresh_token
        idc_chat = chat_body("hi", profile_arn=None)
        assert chat_as(e, body["accessToken"], idc_chat).status_code == 200
        log = e.client.get(e.base + "/_emulator/requests?limit=1").json()["requests"][0]
        assert log["account"] == "acct-2"


@pytest.mark.parametrize(
    ("over", "status", "error"),
    [
        ({"clientSecret": "wrong"}, 401, "invalid_client"),
        ({"clientId": "nobody"}, 401, "invalid_client"),
        ({"grantType": "authorization_code"}, 400, "unsupported_grant_type"),
        ({"refreshToken": "aorUNKNOWN"}, 400, "invalid_grant"),
        ({"refreshToken": None}, 400, "invalid_request"),
    ],
    ids=["bad-secret", "bad-client", "grant-type", "bad-refresh", "missing-refresh"],
)
def test_idc_create_token_errors(over: dict[str, Any], status: int, error: str) -> None:
    with running(EmulatorConfig(auth_method="idc")) as e:
        r = e.client.post(e.base + "/token", json=idc_body(e, "acct-1", **over))
        assert r.status_code == status
        assert r.json()["error"] == error and r.json()["error_description"]


def test_idc_refresh_token_of_another_client_is_invalid_grant() -> None:
    with running(EmulatorConfig(accounts=2, auth_method="idc")) as e:
        other = e.state.accounts["acct-2"].refresh_token
        r = e.client.post(e.base + "/token", json=idc_body(e, "acct-1", refreshToken=other))
        assert (r.status_code, r.json()["error"]) == (400, "invalid_grant")


def test_idc_rotation_and_refresh_fails() -> None:
    with running(EmulatorConfig(auth_method="idc")) as e:
        patch(e, "acct-1", rotate_refresh_token=True)
        first = idc_body(e, "acct-1")
        rotated = e.client.post(e.base + "/token", json=first).json()["refreshToken"]
        assert rotated != first["refreshToken"]
        again = e.client.post(e.base + "/token", json=first)
        assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
        patch(e, "acct-1", refresh_fails=True)
        failing = e.client.post(e.base + "/token", json=idc_body(e, "acct-1"))
        assert (failing.status_code, failing.json()["error"]) == (400, "invalid_grant")
        counters = e.state.stats()["accounts"]["acct-1"]
        assert (counters["refreshes"], counters["refresh_failures"]) == (1, 1)


def test_behaviour_token_ttl_applies_to_refreshed_tokens() -> None:
    with running() as e:
        patch(e, "acct-1", token_ttl_s=30)
        body = social_refresh(e, e.state.accounts["acct-1"].refresh_token).json()
        assert body["expiresIn"] == 30
        e.clock.now += 31
        assert_bearer_invalid(chat_as(e, body["accessToken"]))


def test_expire_hook_invalidates_current_tokens() -> None:
    with running() as e:
        token = e.token()
        assert e.client.post(e.base + "/_emulator/accounts/acct-1/expire").status_code == 200
        assert_bearer_invalid(chat_as(e, token))


FAULTS = {
    "quota_exhausted": (
        402,
        {"message": "You have reached the limit.", "reason": "MONTHLY_REQUEST_COUNT"},
        "ServiceQuotaExceededException",
    ),
    "throttled": (
        429,
        {
            "message": "I am experiencing high traffic, please try again shortly.",
            "reason": "INSUFFICIENT_MODEL_CAPACITY",
        },
        "ThrottlingException",
    ),
}


@pytest.mark.parametrize(("key", "expected"), FAULTS.items(), ids=FAULTS)
def test_account_faults(key: str, expected: tuple[int, dict[str, Any], str]) -> None:
    with running() as e:
        assert patch(e, "acct-1", **{key: True}).json()["behaviour"][key] is True
        r = e.chat("hi")
        assert (r.status_code, r.json(), r.headers["x-amzn-errortype"]) == expected
        patch(e, "acct-1", **{key: False})
        assert e.chat("hi").status_code == 200


def test_suspended_account() -> None:
    with running() as e:
        add_accounts(e, count=1, behaviour={"suspended": True})
        r = e.chat("hi", account="acct-2")
        assert r.status_code == 403
        assert r.json()["reason"] == "TEMPORARILY_SUSPENDED"
        assert "suspended" in r.json()["message"]
        assert e.chat("hi").status_code == 200  # acct-1 unaffected


def test_latency_is_slept_before_the_response() -> None:
    with running() as e:
        patch(e, "acct-1", latency_ms=250)
        assert e.chat("hi").status_code == 200
        assert e.sleep.calls == [0.25]


@pytest.mark.parametrize(
    "behaviour",
    [{"nope": True}, {"throttled": "yes"}, {"latency_ms": -1}],
    ids=["unknown-key", "not-bool", "negative"],
)
def test_bad_behaviour_is_refused(behaviour: dict[str, Any]) -> None:
    with running() as e:
        r = e.client.patch(e.base + "/_emulator/accounts/acct-1", json={"behaviour": behaviour})
        assert r.status_code == 400
        assert (
            e.client.post(e.base + "/_emulator/accounts", json={"behaviour": behaviour}).status_code
            == 400
        )


def test_patch_unknown_account_is_404() -> None:
    with running() as e:
        assert patch(e, "acct-99", throttled=True).status_code == 404


def test_created_accounts_get_next_ids_and_working_token_files() -> None:
    with running(EmulatorConfig(accounts=2)) as e:
        made = add_accounts(e, count=2, auth_method="idc")
        assert [a["id"] for a in made] == ["acct-3", "acct-4"]
        for acct in made:
            tf, reg = acct["token_file"], acct["client_registration"]
            assert tf["authMethod"] == "IdC" and tf["provider"] == "BuilderId"
            assert re.fullmatch(r"[0-9a-f]{40}", tf["clientIdHash"])
            assert ISO_MS.match(tf["expiresAt"]) and ISO_MS.match(reg["expiresAt"])
            assert set(reg) == {"clientId", "clientSecret", "expiresAt"}
            # an IdC login is strict by default, as real ones: its own profile ARN is needed
            assert acct["strict_profile_arn"] is True
            bare = chat_as(e, tf["accessToken"], chat_body("hi", profile_arn=None))
            assert bare.status_code == 403, bare.text
            own = chat_as(e, tf["accessToken"], chat_body("hi", profile_arn=acct["profile_arn"]))
            assert own.status_code == 200, own.text
        listed = e.client.get(e.base + "/_emulator/accounts").json()["accounts"]
        assert [a["id"] for a in listed] == ["acct-1", "acct-2", "acct-3", "acct-4"]


def test_list_available_models() -> None:
    with running() as e:
        r = e.client.get(e.base + "/ListAvailableModels?origin=AI_EDITOR", headers=e.auth())
        body = r.json()
        assert body["defaultModel"] == {"modelId": "auto"} and body["nextToken"] is None
        assert {m["modelId"] for m in body["models"]} == MODEL_IDS
        for m in body["models"]:
            assert m["tokenLimits"]["maxInputTokens"] > 0 and m["modelName"]
        by_id = {m["modelId"]: m for m in body["models"]}
        assert by_id["auto"]["tokenLimits"]["maxInputTokens"] == 1_000_000
        assert by_id["claude-opus-5"]["tokenLimits"]["maxInputTokens"] == 1_000_000
        schema = by_id["claude-opus-4.7"]["additionalModelRequestFieldsSchema"]
        assert set(schema["properties"]) == {"thinking", "output_config", "max_tokens"}
        assert "additionalModelRequestFieldsSchema" not in by_id["claude-sonnet-4.5"]
        assert_bearer_invalid(e.client.get(e.base + "/ListAvailableModels"))


def test_list_available_models_pages() -> None:
    with running() as e:
        seen, token = [], None
        for _ in range(10):
            params = {"maxResults": "5", **({"nextToken": token} if token else {})}
            page = e.client.get(e.base + "/ListAvailableModels", params=params, headers=e.auth())
            seen += [m["modelId"] for m in page.json()["models"]]
            token = page.json()["nextToken"]
            if token is None:
                break
        assert len(seen) == len(set(seen)) and set(seen) == MODEL_IDS


def test_get_usage_limits_counts_served_chat_requests() -> None:
    with running() as e:
        for _ in range(3):
            e.chat("hi")
        e.chat(body=chat_body("hi", model="nope"))  # rejected: not counted
        url = e.base + "/getUsageLimits?origin=AI_EDITOR&resourceType=AGENTIC_REQUEST"
        usage = e.client.get(url, headers=e.auth()).json()
        item = usage["usageBreakdownList"][0]
        assert item["currentUsage"] == 3 and item["usageLimit"] > 3
        assert usage["subscriptionInfo"]["type"] and usage["nextDateReset"] > e.clock.now
        patch(e, "acct-1", quota_exhausted=True)
        item = e.client.get(url, headers=e.auth()).json()["usageBreakdownList"][0]
        assert item["currentUsage"] == item["usageLimit"]
        assert_bearer_invalid(e.client.get(url))


def test_request_log_stats_and_reset_never_show_tokens() -> None:
    with running() as e:
        acct = e.state.accounts["acct-1"]
        e.chat("first")
        e.chat("second", headers={"x-amzn-kiro-agent-mode": "vibe"})
        social_refresh(e, acct.refresh_token)
        log = e.client.get(e.base + "/_emulator/requests?limit=2")
        items = log.json()["requests"]
        assert [i["path"] for i in items] == ["/generateAssistantResponse", "/refreshToken"]
        chat = items[0]
        assert chat["account"] == "acct-1" and chat["status"] == 200
        assert chat["headers"]["x-amzn-kiro-agent-mode"] == "vibe"
        assert (
            chat["body"]["conversationState"]["currentMessage"]["userInputMessage"]["content"]
            == "second"
        )
        assert items[1]["account"] == "acct-1"
        full = e.client.get(e.base + "/_emulator/requests").text
        for secret in (acct.access_token, acct.refresh_token):
            assert secret not in full
        stats = e.client.get(e.base + "/_emulator/stats").json()["accounts"]["acct-1"]
        assert (stats["chat_requests"], stats["refreshes"], stats["streams_now"]) == (2, 1, 0)
        assert stats["streams_max"] == 1
        assert e.client.post(e.base + "/_emulator/reset").status_code == 200
        assert e.client.get(e.base + "/_emulator/requests").json() == {"requests": []}
        stats = e.client.get(e.base + "/_emulator/stats").json()["accounts"]["acct-1"]
        assert stats == {k: 0 for k in stats}
        assert e.chat("after reset").status_code == 200  # tokens survive a reset


def test_client_disconnect_ends_the_stream() -> None:
    with running(sleep=GatedSleep(open_=False)) as e:
        url = e.base + "/generateAssistantResponse"
        body = chat_body(emu({"delay_ms": 60_000, "text": "ab", "chunks": 2}))
        with e.client.stream("POST", url, json=body, headers=e.auth()) as r:
            it = r.iter_raw()
            assert text_of(events(next(it))) == "a"
            assert e.state.accounts["acct-1"].counters.streams_now == 1
        deadline = time.monotonic() + 30
        while e.state.accounts["acct-1"].counters.streams_now and time.monotonic() < deadline:
            time.sleep(0.01)
        assert e.state.accounts["acct-1"].counters.streams_now == 0


def test_request_log_of_one_account_is_filtered_before_the_limit() -> None:
    with running(EmulatorConfig(accounts=2)) as e:
        one, two = (e.state.accounts[i].access_token for i in ("acct-1", "acct-2"))
        chat_as(e, one, chat_body("mine"))
        for n in range(5):
            chat_as(e, two, chat_body(f"theirs {n}"))
        url = e.base + "/_emulator/requests"
        assert [i["account"] for i in e.client.get(url + "?limit=3").json()["requests"]] == [
            "acct-2"
        ] * 3
        mine = e.client.get(url, params={"limit": 3, "account": "acct-1"}).json()["requests"]
        assert len(mine) == 1 and mine[0]["account"] == "acct-1"
        message = mine[0]["body"]["conversationState"]["currentMessage"]["userInputMessage"]
        assert message["content"] == "mine"
        assert e.client.get(url, params={"account": "acct-9"}).json() == {"requests": []}
