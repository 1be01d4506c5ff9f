"""Native model fields (issue 10): a model whose additionalModelRequestFieldsSchema offers
thinking / effort / max_tokens gets `additionalModelRequestFields` instead of the text tags; the
emulator checks those fields against the model's schema."""

from __future__ import annotations

from typing import Any

import pytest

from ki2api.core.messages import Conversation, GenParams, Message, TextPart, ThinkingConfig
from ki2api.kiro.request.build import build_request
from ki2api.kiro.request.thinking_fields import native_effort, native_request_fields
from kiro_emulator.errors import Rejection
from kiro_emulator.models import native_thinking

ALL = frozenset({"thinking", "effort", "max_tokens"})

EFFORT_CASES = [
    pytest.param(ThinkingConfig("adaptive", effort="xhigh"), "xhigh", id="xhigh kept"),
    pytest.param(ThinkingConfig("adaptive", effort="max"), "max", id="max kept"),
    pytest.param(ThinkingConfig("adaptive", effort="Minimal"), "low", id="minimal"),
    pytest.param(ThinkingConfig("adaptive", effort="odd"), "high", id="unknown"),
    pytest.param(ThinkingConfig("adaptive"), "high", id="none"),
    pytest.param(ThinkingConfig("enabled", 1024), "low", id="small budget"),
    pytest.param(ThinkingConfig("enabled", 4096), "low", id="4096"),
    pytest.param(ThinkingConfig("enabled", 10000), "medium", id="medium budget"),
    pytest.param(ThinkingConfig("enabled", 31999), "high", id="big budget"),
    pytest.param(ThinkingConfig("enabled"), "high", id="default budget"),
]


@pytest.mark.parametrize(("config", "expected"), EFFORT_CASES)
def test_native_effort(config: ThinkingConfig, expected: str) -> None:
    assert native_effort(config) == expected


FIELD_CASES = [
    pytest.param(
        ThinkingConfig("adaptive", effort="xhigh"),
        8000,
        ALL,
        {
            "thinking": {"type": "adaptive"},
            "output_config": {"effort": "xhigh"},
            "max_tokens": 8000,
        },
        id="all offered",
    ),
    pytest.param(
        ThinkingConfig("enabled", 2000),
        None,
        frozenset({"thinking"}),
        {"thinking": {"type": "adaptive"}},
        id="thinking only",
    ),
    pytest.param(None, 500, ALL, {"max_tokens": 500}, id="no thinking"),
    pytest.param(ThinkingConfig("adaptive"), 500, frozenset(), {}, id="nothing offered"),
    pytest.param(
        ThinkingConfig("adaptive"), None, frozenset({"effort"}), {}, id="effort without thinking"
    ),
    pytest.param(None, 0, ALL, {}, id="no max_tokens"),
]


@pytest.mark.parametrize(("config", "max_tokens", "offered", "expected"), FIELD_CASES)
def test_native_request_fields(
    config: ThinkingConfig | None, max_tokens: int | None, offered: frozenset[str], expected: Any
) -> None:
    assert native_request_fields(config, max_tokens, offered) == expected


def _body(native: frozenset[str], thinking: ThinkingConfig | None) -> dict[str, Any]:
    conv = Conversation(
        model_id="claude-opus-4.8",
        messages=(Message("user", (TextPart("Why?"),)),),
        params=GenParams(max_tokens=1000, thinking=thinking),
        native=native,
    )
    return build_request(conv, conversation_id="c", profile_arn=None)


def _content(body: dict[str, Any]) -> str:
    text: str = body["conversationState"]["currentMessage"]["userInputMessage"]["content"]
    return text


def test_native_thinking_replaces_the_tags() -> None:
    body = _body(ALL, ThinkingConfig("adaptive", effort="max"))
    assert body["additionalModelRequestFields"] == {
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "max"},
        "max_tokens": 1000,
    }
    assert _content(body) == "Why?"


def test_models_without_native_fields_keep_the_tags() -> None:
    body = _body(frozenset(), ThinkingConfig("adaptive", effort="max"))
    assert "additionalModelRequestFields" not in body
    assert _content(body).startswith("<thinking_mode>adaptive</thinking_mode>")


def test_native_max_tokens_alone_keeps_the_tags() -> None:
    body = _body(frozenset({"max_tokens"}), ThinkingConfig("enabled", 4096))
    assert body["additionalModelRequestFields"] == {"max_tokens": 1000}
    assert _content(body).startswith("<thinking_mode>enabled</thinking_mode>")


EMULATOR_CASES = [
    pytest.param({}, "claude-sonnet-4.5", False, id="none sent"),
    pytest.param(
        {"thinking": {"type": "adaptive"}, "output_config": {"effort": "xhigh"}},
        "claude-opus-4.7",
        True,
        id="kiro-cli's fields",
    ),
    pytest.param({"thinking": {"type": "disabled"}}, "claude-opus-5", False, id="disabled"),
    pytest.param({"max_tokens": 10}, "claude-sonnet-4.6", False, id="max_tokens"),
    pytest.param({"thinking": {"type": "adaptive"}}, "claude-sonnet-4.5", None, id="not native"),
    pytest.param({"thinking": {"type": "enabled"}}, "claude-opus-4.8", None, id="bad type"),
    pytest.param({"output_config": {"effort": "ultra"}}, "claude-opus-4.8", None, id="bad effort"),
    pytest.param({"max_tokens": 0}, "claude-opus-4.8", None, id="bad max_tokens"),
    pytest.param({"temperature": 1}, "claude-opus-4.8", None, id="unknown field"),
]


@pytest.mark.parametrize(("fields", "model", "expected"), EMULATOR_CASES)
def test_emulator_checks_the_fields(fields: dict[str, Any], model: str, expected: bool) -> None:
    body = {"additionalModelRequestFields": fields} if fields else {}
    if expected is None:
        with pytest.raises(Rejection) as err:
            native_thinking(body, model)
        assert err.value.status == 400
    else:
        assert native_thinking(body, model) is expected
