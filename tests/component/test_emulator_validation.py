"""Request validation: each mutation of a valid body gets the real upstream status and body."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kiro_emulator import EmulatorConfig
from tests.component.test_emulator_kit import (
    IMPROPER_BODY,
    VALIDATION_TYPE,
    Emu,
    chat_body,
    events,
    running,
    text_of,
    tool_spec,
)

Body = dict[str, Any]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()
INVALID_MODEL_BODY = {
    "__type": VALIDATION_TYPE,
    "message": "Invalid model. Please select a different model to continue.",
    "reason": "INVALID_MODEL_ID",
}
TOO_LONG_BODY = {
    "__type": VALIDATION_TYPE,
    "message": "Input is too long.",
    "reason": "CONTENT_LENGTH_EXCEEDS_THRESHOLD",
}
# Tool schema features real Kiro accepted (docs/kiro-protocol.md §3.6).
RICH_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "path": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "mode": {"not": {"const": "forbidden"}},
        "opts": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"depth": {"anyOf": [{"type": "integer"}, {"type": "null"}]}},
        },
    },
    "required": ["path"],
}


def user(content: str, results: list[Body] | None = None, **extra: Any) -> Body:
    msg: Body = {"content": content, "origin": "AI_EDITOR", **extra}
    if results is not None:
        msg["userInputMessageContext"] = {"toolResults": results}
    return {"userInputMessage": msg}


def assistant(content: str, uses: list[Body] | None = None) -> Body:
    msg: Body = {"content": content}
    if uses is not None:
        msg["toolUses"] = uses
    return {"assistantResponseMessage": msg}


def use(tid: str = "tooluse_A", name: str = "get_weather") -> Body:
    return {"toolUseId": tid, "name": name, "input": {"city": "Paris"}}


def result(tid: str = "tooluse_A") -> Body:
    return {"toolUseId": tid, "content": [{"text": "sunny"}], "status": "success"}


def base_body() -> Body:
    """Valid: a finished tool round trip in history, tools offered, an image in the current."""
    history = [
        user("What's the weather in Paris?"),
        assistant("Let me check.", [use()]),
        user("", [result()]),
        assistant("It is sunny."),
    ]
    body = chat_body("Thanks!", history=history, tools=[tool_spec("get_weather")])
    cur(body)["images"] = [{"format": "png", "source": {"bytes": PNG}}]
    return body


def cs(b: Body) -> Body:
    return b["conversationState"]  # type: ignore[no-any-return]


def cur(b: Body) -> Body:
    return cs(b)["currentMessage"]["userInputMessage"]  # type: ignore[no-any-return]


def hist(b: Body) -> list[Body]:
    return cs(b)["history"]  # type: ignore[no-any-return]


def ctx(b: Body) -> Body:
    return cur(b)["userInputMessageContext"]  # type: ignore[no-any-return]


def spec(b: Body, i: int = 0) -> Body:
    return ctx(b)["tools"][i]["toolSpecification"]  # type: ignore[no-any-return]


def setitem(obj: Any, key: Any, value: Any) -> None:
    obj[key] = value


Mutation = Callable[[Body], Any]

# id -> (mutation of base_body(), expected status, expected body)
REJECTIONS: dict[str, tuple[Mutation, int, Body]] = {
    "no-conversationState": (lambda b: b.pop("conversationState"), 400, IMPROPER_BODY),
    "conversationState-not-object": (
        lambda b: setitem(b, "conversationState", []),
        400,
        IMPROPER_BODY,
    ),
    "trigger-AUTO": (lambda b: setitem(cs(b), "chatTriggerType", "AUTO"), 400, IMPROPER_BODY),
    "trigger-missing": (lambda b: cs(b).pop("chatTriggerType"), 400, IMPROPER_BODY),
    "conversationId-not-string": (
        lambda b: setitem(cs(b), "conversationId", 5),
        400,
        IMPROPER_BODY,
    ),
    "no-currentMessage": (lambda b: cs(b).pop("currentMessage"), 400, IMPROPER_BODY),
    "content-missing": (lambda b: cur(b).pop("content"), 400, IMPROPER_BODY),
    "content-empty": (lambda b: setitem(cur(b), "content", ""), 400, IMPROPER_BODY),
    "content-blank": (lambda b: setitem(cur(b), "content", " \n "), 400, IMPROPER_BODY),
    "content-not-string": (lambda b: setitem(cur(b), "content", ["hi"]), 400, IMPROPER_BODY),
    "content-too-long": (
        lambda b: setitem(cur(b), "content", "x" * 600_001),
        400,
        TOO_LONG_BODY,
    ),
    "body-too-large": (
        lambda b: setitem(hist(b)[0]["userInputMessage"], "content", "y" * 615_000),
        400,
        IMPROPER_BODY,
    ),
    "model-unknown": (
        lambda b: setitem(cur(b), "modelId", "claude-sonnet-4-20250514"),
        400,
        INVALID_MODEL_BODY,
    ),
    "model-lowercase-legacy": (
        lambda b: setitem(cur(b), "modelId", "claude_sonnet_4_20250514_v1_0"),
        400,
        INVALID_MODEL_BODY,
    ),
    "model-not-string": (lambda b: setitem(cur(b), "modelId", 4), 400, IMPROPER_BODY),
    "history-not-list": (lambda b: setitem(cs(b), "history", {}), 400, IMPROPER_BODY),
    "history-starts-with-assistant": (
        lambda b: setitem(cs(b), "history", hist(b)[1:] + [assistant("x")]),
        400,
        IMPROPER_BODY,
    ),
    "history-ends-with-user": (lambda b: hist(b).pop(), 400, IMPROPER_BODY),
    "history-two-users": (
        lambda b: setitem(cs(b), "history", [user("a"), user("b"), assistant("c")]),
        400,
        IMPROPER_BODY,
    ),
    "history-two-assistants": (
        lambda b: hist(b).append(assistant("again")),
        400,
        IMPROPER_BODY,
    ),
    "history-entry-with-two-kinds": (
        lambda b: hist(b)[0].update(assistant("x")),
        400,
        IMPROPER_BODY,
    ),
    "history-unknown-kind": (
        lambda b: setitem(cs(b), "history", [{"systemMessage": {}}, assistant("x")]),
        400,
        IMPROPER_BODY,
    ),
    "history-user-empty-without-results": (
        lambda b: setitem(hist(b)[0]["userInputMessage"], "content", ""),
        400,
        IMPROPER_BODY,
    ),
    "assistant-content-missing": (
        lambda b: hist(b)[3]["assistantResponseMessage"].pop("content"),
        400,
        IMPROPER_BODY,
    ),
    "tool-use-input-string": (
        lambda b: setitem(hist(b)[1]["assistantResponseMessage"]["toolUses"][0], "input", "{}"),
        400,
        IMPROPER_BODY,
    ),
    "tool-use-without-id": (
        lambda b: hist(b)[1]["assistantResponseMessage"]["toolUses"][0].pop("toolUseId"),
        400,
        IMPROPER_BODY,
    ),
    "tool-result-unknown-id": (
        lambda b: setitem(
            hist(b)[2], "userInputMessage", user("", [result("tooluse_B")])["userInputMessage"]
        ),
        400,
        IMPROPER_BODY,
    ),
    "tool-use-unanswered": (
        lambda b: setitem(hist(b), 2, user("no results here")),
        400,
        IMPROPER_BODY,
    ),
    "tool-result-answers-older-assistant": (
        lambda b: (
            setitem(cs(b), "history", hist(b)[:3] + [assistant("Done.")])
            or ctx(b).update(toolResults=[result()])
        ),
        400,
        IMPROPER_BODY,
    ),
    "current-tool-result-without-tool-use": (
        lambda b: ctx(b).update(toolResults=[result("tooluse_Z")]),
        400,
        IMPROPER_BODY,
    ),
    "duplicate-tool-results": (
        lambda b: setitem(
            hist(b)[2], "userInputMessage", user("", [result(), result()])["userInputMessage"]
        ),
        400,
        IMPROPER_BODY,
    ),
    "tool-result-content-not-list": (
        lambda b: setitem(
            hist(b)[2]["userInputMessage"]["userInputMessageContext"]["toolResults"][0],
            "content",
            "sunny",
        ),
        400,
        IMPROPER_BODY,
    ),
    "tool-results-but-no-tools": (lambda b: ctx(b).pop("tools"), 400, IMPROPER_BODY),
    "tool-results-but-empty-tools": (
        lambda b: setitem(ctx(b), "tools", []),
        400,
        IMPROPER_BODY,
    ),
    "history-tool-missing-from-tools": (
        lambda b: setitem(ctx(b), "tools", [tool_spec("other_tool")]),
        400,
        IMPROPER_BODY,
    ),
    "tool-name-with-space": (lambda b: setitem(spec(b), "name", "get weather"), 400, IMPROPER_BODY),
    "tool-name-leading-digit": (lambda b: setitem(spec(b), "name", "1tool"), 400, IMPROPER_BODY),
    "tool-name-65-chars": (lambda b: setitem(spec(b), "name", "a" * 65), 400, IMPROPER_BODY),
    "tool-name-duplicate": (
        lambda b: ctx(b)["tools"].append(tool_spec("get_weather")),
        400,
        IMPROPER_BODY,
    ),
    "tool-description-empty": (lambda b: setitem(spec(b), "description", ""), 400, IMPROPER_BODY),
    "tool-description-too-long": (
        lambda b: setitem(spec(b), "description", "d" * 10_241),
        400,
        IMPROPER_BODY,
    ),
    "tool-schema-not-object": (
        lambda b: setitem(spec(b), "inputSchema", {"json": "object"}),
        400,
        IMPROPER_BODY,
    ),
    "tool-schema-missing": (lambda b: spec(b).pop("inputSchema"), 400, IMPROPER_BODY),
    "image-format-bmp": (
        lambda b: setitem(cur(b)["images"][0], "format", "bmp"),
        400,
        IMPROPER_BODY,
    ),
    "image-format-jpg": (
        lambda b: setitem(cur(b)["images"][0], "format", "jpg"),
        400,
        IMPROPER_BODY,
    ),
    "image-data-url": (
        lambda b: setitem(cur(b)["images"][0]["source"], "bytes", "data:image/png;base64," + PNG),
        400,
        IMPROPER_BODY,
    ),
    "image-not-base64": (
        lambda b: setitem(cur(b)["images"][0]["source"], "bytes", "not base64!"),
        400,
        IMPROPER_BODY,
    ),
    "eleven-images": (
        lambda b: setitem(cur(b), "images", cur(b)["images"] * 11),
        400,
        IMPROPER_BODY,
    ),
    "profileArn-missing-social": (
        lambda b: b.pop("profileArn"),
        400,
        {
            "__type": VALIDATION_TYPE,
            "message": "profileArn is required for this request.",
            "reason": None,
        },
    ),
    "current-empty-with-empty-toolResults-list": (
        lambda b: (setitem(cur(b), "content", ""), setitem(ctx(b), "toolResults", [])),
        400,
        IMPROPER_BODY,
    ),
    "history-user-empty-without-toolResults": (
        lambda b: hist(b)[2]["userInputMessage"].pop("userInputMessageContext"),
        400,
        IMPROPER_BODY,
    ),
    "profileArn-malformed": (
        lambda b: setitem(b, "profileArn", "arn:aws:codewhisperer:us-east-1:123:profile/X"),
        400,
        IMPROPER_BODY,
    ),
}

ACCEPTED: dict[str, Mutation] = {
    "base": lambda b: None,
    "no-history": lambda b: setitem(cs(b), "history", []) or ctx(b).pop("tools"),
    "no-modelId": lambda b: cur(b).pop("modelId"),
    "legacy-model-id": lambda b: setitem(cur(b), "modelId", "CLAUDE_SONNET_4_20250514_V1_0"),
    "non-claude-model": lambda b: setitem(cur(b), "modelId", "qwen3-coder-next"),
    "trigger-DIAGNOSTIC": lambda b: setitem(cs(b), "chatTriggerType", "DIAGNOSTIC"),
    "content-at-limit": lambda b: setitem(cur(b), "content", "x" * 600_000),
    "tool-name-64-with-hyphen": lambda b: ctx(b)["tools"].append(tool_spec("a-" + "b" * 62)),
    "tool-description-at-limit": lambda b: setitem(spec(b), "description", "d" * 10_240),
    "cachePoint-entry-in-tools": lambda b: ctx(b)["tools"].append(
        {"cachePoint": {"type": "default"}}
    ),
    "ten-images": lambda b: setitem(cur(b), "images", cur(b)["images"] * 10),
    "current-answers-last-tool-use": lambda b: (
        hist(b).__setitem__(3, assistant("Checking again.", [use("tooluse_C")])),
        ctx(b).update(toolResults=[result("tooluse_C")]),
    ),
    "tool-result-status-error": lambda b: setitem(
        hist(b)[2]["userInputMessage"]["userInputMessageContext"]["toolResults"][0],
        "status",
        "error",
    ),
    "unknown-extra-fields": lambda b: cs(b).update(agentTaskType="vibe", workspaceId="w"),
    # real clients send "" on a turn that only carries tool results (docs/kiro-protocol.md §3.5)
    "current-empty-content-with-toolResults": lambda b: (
        hist(b).__setitem__(3, assistant("Checking again.", [use("tooluse_C")])),
        ctx(b).update(toolResults=[result("tooluse_C")]),
        setitem(cur(b), "content", ""),
    ),
    "history-empty-content-with-toolResults": lambda b: setitem(
        hist(b)[2]["userInputMessage"], "content", ""
    ),
    "tool-schema-with-$schema-additionalProperties-anyOf-not": lambda b: setitem(
        spec(b), "inputSchema", {"json": RICH_SCHEMA}
    ),
}


@pytest.fixture(scope="module")
def em() -> Iterator[Emu]:
    with running() as e:
        yield e


@pytest.mark.parametrize(("mutate", "status", "expected"), REJECTIONS.values(), ids=REJECTIONS)
def test_invalid_request_is_rejected_like_kiro(
    em: Emu, mutate: Mutation, status: int, expected: Body
) -> None:
    body = base_body()
    mutate(body)
    r = em.chat(body=body)
    assert (r.status_code, r.json()) == (status, expected)
    assert "x-amzn-errortype" not in r.headers  # real JSON 400s carry none (10.2)
    log = em.client.get(em.base + "/_emulator/requests?limit=1").json()["requests"][-1]
    assert log["status"] == status and log["rejected"]


@pytest.mark.parametrize("mutate", ACCEPTED.values(), ids=ACCEPTED)
def test_valid_request_variants_are_accepted(em: Emu, mutate: Mutation) -> None:
    body = base_body()
    mutate(body)
    r = em.chat(body=body)
    assert r.status_code == 200, r.text
    assert text_of(events(r.content)).startswith("Echo: ")


def test_body_that_is_not_json_is_improper(em: Emu) -> None:
    r = em.client.post(em.base + "/generateAssistantResponse", content=b"{oops", headers=em.auth())
    assert (r.status_code, r.json()) == (400, IMPROPER_BODY)


def test_idc_account_may_omit_profile_arn() -> None:
    with running(EmulatorConfig(auth_method="idc")) as e:
        body = base_body()
        body.pop("profileArn")
        assert e.chat(body=body).status_code == 200
