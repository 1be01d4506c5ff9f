"""The live model catalogue (issue 10), through the real stack with the official SDKs:
`/v1/models` lists what the accounts' ListAvailableModels offers with real limits; opus-5 is
served as itself; a newer name nobody offers is a 404 naming the closest offered models; a model
only one account offers is served by that account alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import Gateway
from tests.support.pool_accounts import (
    chat_requests,
    make_pool,
    requests_of,
    start_pool_gateway,
)

# every listed id of the emulator's 2026 catalogue except claude-opus-5
WITHOUT_OPUS_5 = [
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
]


def _extra(model: Any, key: str) -> Any:
    extra = getattr(model, "model_extra", None) or {}
    return getattr(model, key, None) if key in type(model).model_fields else extra.get(key)


def test_models_list_the_live_catalogue_in_both_dialects(gateway: Gateway) -> None:
    listed = {m.id: m for m in gateway.openai().models.list()}
    for name in ("claude-opus-5", "claude-sonnet-5", "auto"):
        assert _extra(listed[name], "max_input_tokens") == 1_000_000, name
    assert _extra(listed["claude-opus-5"], "max_tokens") == 128_000  # the emulator's real limit
    assert _extra(listed["deepseek-3.2"], "input_modalities") == ["text"]  # only offered live
    assert _extra(listed["claude-opus-5"], "input_modalities") == ["text", "image"]
    assert "claude-opus-5-5" not in listed

    models = {m.id: m for m in gateway.anthropic().models.list(limit=1000)}
    assert models["claude-opus-5"].max_input_tokens == 1_000_000
    assert models["auto"].max_input_tokens == 1_000_000
    assert models["claude-sonnet-5"].display_name == "Claude Sonnet 5"
    calls = gateway.emulator_requests(catalogue=True)
    asked = [q for q in calls if "ListAvailableModels" in q["path"]]
    assert asked, "the catalogue comes from ListAvailableModels"


def _sent_model(gateway: Gateway) -> str:
    chats = [q for q in gateway.emulator_requests() if q["path"].endswith("Response")]
    current = chats[-1]["body"]["conversationState"]["currentMessage"]["userInputMessage"]
    model: str = current["modelId"]
    return model


def test_opus_5_is_served_as_itself(gateway: Gateway) -> None:
    resp = gateway.openai().chat.completions.create(
        model="claude-opus-5", messages=[{"role": "user", "content": "hi"}]
    )
    assert resp.model == "claude-opus-5"
    assert _sent_model(gateway) == "claude-opus-5"
    msg = gateway.anthropic().messages.create(
        model="claude-opus-5-20260701[1m]",
        max_tokens=100,
        messages=[{"role": "user", "content": "hi"}],
    )
    assert msg.model == "claude-opus-5-20260701[1m]"
    assert _sent_model(gateway) == "claude-opus-5"


@pytest.mark.parametrize("name", ["claude-opus-6", "claude-opus-5-5"])
def test_an_unknown_newer_name_is_404_naming_the_closest(gateway: Gateway, name: str) -> None:
    with pytest.raises(openai.NotFoundError) as oa:
        gateway.openai().chat.completions.create(
            model=name, messages=[{"role": "user", "content": "hi"}]
        )
    assert oa.value.code == "model_not_found"
    assert "claude-opus-5, claude-opus-4-8" in oa.value.message
    with pytest.raises(anthropic.NotFoundError) as an:
        gateway.anthropic().messages.create(
            model=name, max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        )
    assert "claude-opus-5, claude-opus-4-8" in an.value.message
    chats = [q for q in gateway.emulator_requests() if q["path"].endswith("Response")]
    assert chats == []  # never sent to an older model


def test_a_model_only_one_account_offers_is_served_by_it_alone(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    # p0 wins every tie but lacks claude-opus-5; p1 offers everything
    without, full = make_pool(emulator_url, tmp_path, [{"models": WITHOUT_OPUS_5}, {}])
    gw = start_pool_gateway(gateway_factory, [without, full], tmp_path)
    client = gw.openai()
    for _ in range(4):
        client.chat.completions.create(
            model="claude-opus-5", messages=[{"role": "user", "content": "hi"}]
        )
    assert chat_requests(emulator_url, without) == 0  # never tried (no INVALID_MODEL_ID 400)
    assert chat_requests(emulator_url, full) == 4
    sent = requests_of(emulator_url, [full])
    assert {
        q["body"]["conversationState"]["currentMessage"]["userInputMessage"]["modelId"]
        for q in sent
    } == {"claude-opus-5"}
    # a model both offer goes to p0 (the tie-break order) as before
    client.chat.completions.create(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}]
    )
    assert chat_requests(emulator_url, without) == 1


def test_a_model_no_account_offers_is_404_even_if_the_table_knows_it(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    only = ["auto", "claude-sonnet-4.5"]
    a, b = make_pool(emulator_url, tmp_path, [{"models": only}, {"models": only}])
    gw = start_pool_gateway(gateway_factory, [a, b], tmp_path)
    ids = [m.id for m in gw.openai().models.list()]
    assert ids == ["claude-sonnet-4-5-20250929", "claude-sonnet-4-5", "auto"]
    r = httpx.post(
        f"{gw.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {gw.settings.api_keys[0]}"},
        json={"model": "claude-opus-4-8", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "model_not_found"
    assert chat_requests(emulator_url, a) + chat_requests(emulator_url, b) == 0


def test_emulator_refuses_a_model_the_account_is_not_offered(
    emulator_url: str, tmp_path: Path
) -> None:
    [member] = make_pool(emulator_url, tmp_path, [{"models": ["auto"]}])
    token = member.account.data["token_file"]["accessToken"]
    headers = {"authorization": f"Bearer {token}"}
    page = httpx.get(f"{emulator_url}/ListAvailableModels", headers=headers).json()
    assert [m["modelId"] for m in page["models"]] == ["auto"]
    assert page["models"][0]["tokenLimits"]["maxInputTokens"] == 1_000_000
    body = {
        "conversationState": {
            "chatTriggerType": "MANUAL",
            "conversationId": "c1",
            "currentMessage": {
                "userInputMessage": {
                    "content": "hi",
                    "modelId": "claude-sonnet-4.5",
                    "origin": "AI_EDITOR",
                }
            },
        },
        "profileArn": member.account.data["profile_arn"],
    }
    r = httpx.post(f"{emulator_url}/generateAssistantResponse", headers=headers, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["reason"] == "INVALID_MODEL_ID"


def _last_chat_body(gateway: Gateway) -> dict[str, Any]:
    chats = [q for q in gateway.emulator_requests() if q["path"].endswith("Response")]
    body: dict[str, Any] = chats[-1]["body"]
    return body


def test_native_thinking_fields_where_the_model_offers_them(gateway: Gateway) -> None:
    msg = gateway.anthropic().messages.create(
        model="claude-opus-4-8",
        max_tokens=2000,
        thinking={"type": "adaptive"},
        output_config={"effort": "xhigh"},
        messages=[{"role": "user", "content": "Why is the sky blue?"}],
    )
    body = _last_chat_body(gateway)
    assert body["additionalModelRequestFields"] == {
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "xhigh"},
        "max_tokens": 2000,
    }
    current = body["conversationState"]["currentMessage"]["userInputMessage"]["content"]
    assert "<thinking_mode>" not in current
    assert msg.content[0].type == "thinking"
    assert msg.content[0].thinking == "Thinking about: Why is the sky blue?"

    resp = gateway.openai().chat.completions.create(
        model="claude-sonnet-5",
        reasoning_effort="low",
        messages=[{"role": "user", "content": "hi"}],
    )
    body = _last_chat_body(gateway)
    assert body["additionalModelRequestFields"] == {
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "low"},
    }
    assert _extra(resp.choices[0].message, "reasoning_content") == "Thinking about: hi"

    gateway.openai().chat.completions.create(  # no native fields: the tags as before
        model="claude-sonnet-4-5",
        reasoning_effort="low",
        messages=[{"role": "user", "content": "hi"}],
    )
    body = _last_chat_body(gateway)
    assert "additionalModelRequestFields" not in body
    current = body["conversationState"]["currentMessage"]["userInputMessage"]["content"]
    assert current.startswith("<thinking_mode>enabled</thinking_mode>")


@pytest.mark.parametrize(("model", "window"), [("auto", 1_000_000), ("claude-sonnet-4-5", 200_000)])
def test_usage_estimates_use_the_real_window(gateway: Gateway, model: str, window: int) -> None:
    # Kiro reports only a context-usage percentage: 1% of the model's real window
    resp = gateway.openai().chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": '<emu>{"context_usage": 1.0}</emu>hi'}],
    )
    assert resp.usage is not None and resp.usage.prompt_tokens == window // 100


def test_each_account_is_asked_on_its_own_region(
    emulator_url: str, tmp_path: Path, gateway_factory: Any
) -> None:
    eu, us = make_pool(
        emulator_url, tmp_path, [{"region": "eu-central-1", "models": ["claude-opus-5"]}, {}]
    )
    gw = start_pool_gateway(
        gateway_factory, [eu, us], tmp_path, kiro_api_base=f"{emulator_url}/{{region}}"
    )
    assert "claude-opus-5" in [m.id for m in gw.openai().models.list()]
    log = httpx.get(f"{emulator_url}/_emulator/requests", params={"limit": 256}).json()
    asked = {
        (q["account"], q.get("region"), q["status"])
        for q in log["requests"]
        if q["path"].endswith("/ListAvailableModels")
    }
    assert (eu.emu_id, "eu-central-1", 200) in asked, asked
    assert (us.emu_id, "us-east-1", 200) in asked, asked
    for _ in range(3):  # p0 (eu) wins ties but offers only opus-5: sonnet goes to us
        gw.openai().chat.completions.create(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}]
        )
    assert chat_requests(emulator_url, eu) == 0 and chat_requests(emulator_url, us) == 3
