"""kiro/accounts/catalogue.py: parsing ListAvailableModels answers, and the live catalogue's
caching, refresh, fallback and per-account offers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.models import OfferedModel, default_catalogue
from ki2api.kiro.accounts.catalogue import LiveCatalogue, native_fields, parse_models_page

SCHEMA = {
    "type": "object",
    "properties": {
        "thinking": {"type": "object"},
        "output_config": {"type": "object", "properties": {"effort": {"enum": ["low", "max"]}}},
        "max_tokens": {"type": "integer"},
    },
}

NATIVE_CASES = [
    pytest.param(SCHEMA, {"thinking", "effort", "max_tokens"}, id="all three"),
    pytest.param({"properties": {"output_config": {"type": "object"}}}, set(), id="no effort"),
    pytest.param({"properties": {"max_tokens": {}}}, {"max_tokens"}, id="max_tokens"),
    pytest.param('{"properties": {"thinking": {}}}', {"thinking"}, id="JSON string"),
    pytest.param("not json", set(), id="bad string"),
    pytest.param({"type": "object"}, set(), id="no properties"),
    pytest.param(None, set(), id="absent"),
    pytest.param([1], set(), id="odd"),
]


@pytest.mark.parametrize(("schema", "expected"), NATIVE_CASES)
def test_native_fields(schema: object, expected: set[str]) -> None:
    assert native_fields(schema) == expected


def _entry(**fields: Any) -> dict[str, Any]:
    return {"modelId": "claude-opus-5", "modelName": "Claude Opus 5", **fields}


PAGE_CASES = [
    pytest.param(
        _entry(
            supportedInputTypes=["TEXT", "IMAGE"],
            tokenLimits={"maxInputTokens": 1_000_000, "maxOutputTokens": 128_000},
            additionalModelRequestFieldsSchema=SCHEMA,
        ),
        OfferedModel(
            "claude-opus-5",
            "Claude Opus 5",
            1_000_000,
            128_000,
            True,
            frozenset({"thinking", "effort", "max_tokens"}),
        ),
        id="full",
    ),
    pytest.param(
        _entry(supportedInputTypes=["TEXT"]),
        OfferedModel("claude-opus-5", "Claude Opus 5", images=False),
        id="text only, default limits",
    ),
    pytest.param(
        _entry(tokenLimits={"maxInputTokens": -1, "maxOutputTokens": "x"}, modelName=""),
        OfferedModel("claude-opus-5", "claude-opus-5"),
        id="odd limits and name",
    ),
    pytest.param(
        {"modelId": " glm-5 ", "tokenLimits": {"maxInputTokens": 128_000}},
        OfferedModel("glm-5", "glm-5", 128_000),
        id="blanks stripped",
    ),
    pytest.param({"modelId": ""}, None, id="no id"),
    pytest.param({"modelName": "x"}, None, id="missing id"),
]


@pytest.mark.parametrize(("entry", "expected"), PAGE_CASES)
def test_parse_models_page(entry: dict[str, Any], expected: OfferedModel | None) -> None:
    models, token = parse_models_page({"models": [entry, "odd"], "nextToken": "5"})
    assert models == ([] if expected is None else [expected])
    assert token == "5"


@pytest.mark.parametrize("body", [None, [], {"models": "x"}, {"nextToken": ""}])
def test_parse_models_page_odd_bodies(body: object) -> None:
    assert parse_models_page(body) == ([], None)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


OPUS5 = OfferedModel("claude-opus-5", "Claude Opus 5", 1_000_000, 128_000)
AUTO = OfferedModel("auto", "Auto", 1_000_000)


def _live(
    answers: dict[str, Any], accounts: list[str], clock: Clock
) -> tuple[LiveCatalogue, list[str]]:
    asked: list[str] = []

    async def fetch(account_id: str) -> tuple[OfferedModel, ...]:
        asked.append(account_id)
        answer = answers[account_id]
        if answer == "hang":
            await asyncio.sleep(60)
        if isinstance(answer, Exception):
            raise answer
        return tuple(answer)

    live = LiveCatalogue(
        default_catalogue(),
        lambda: accounts,
        fetch,
        refresh_s=100,
        retry_s=10,
        timeout_s=0.05,
        clock=clock,
    )
    return live, asked


def test_live_catalogue_caches_and_refreshes() -> None:
    clock = Clock()
    live, asked = _live({"a": [OPUS5, AUTO]}, ["a"], clock)
    first = asyncio.run(live.catalogue())
    assert [m.id for m in first.all()] == ["claude-opus-5", "auto"]
    assert asyncio.run(live.catalogue()) is first and asked == ["a"]  # cached
    clock.now = 99
    asyncio.run(live.catalogue())
    assert asked == ["a"]
    clock.now = 100
    asyncio.run(live.catalogue())
    assert asked == ["a", "a"]  # refreshed after refresh_s


def test_live_catalogue_falls_back_to_the_table_and_retries() -> None:
    clock = Clock()
    down = GatewayError(ErrorKind.UPSTREAM_UNAVAILABLE, "down")
    answers: dict[str, Any] = {"a": down}
    live, asked = _live(answers, ["a"], clock)
    assert asyncio.run(live.catalogue()).all() == default_catalogue().all()
    assert live.offered_ids("a") == default_catalogue().kiro_ids()
    answers["a"] = [AUTO]
    clock.now = 9
    asyncio.run(live.catalogue())
    assert asked == ["a"]  # not before retry_s
    clock.now = 10
    assert [m.id for m in asyncio.run(live.catalogue()).all()] == ["auto"]
    assert live.offered_ids("a") == {"auto"}


def test_live_catalogue_unions_accounts_and_keeps_the_table_for_unknown_ones() -> None:
    clock = Clock()
    live, _ = _live({"a": [AUTO], "b": [OPUS5], "c": RuntimeError("boom")}, ["a", "b"], clock)
    both = asyncio.run(live.catalogue())
    assert [m.id for m in both.all()] == ["claude-opus-5", "auto"]
    assert live.offered_ids("a") == {"auto"} and live.offered_ids("b") == {"claude-opus-5"}
    live2, _ = _live({"a": [AUTO], "c": RuntimeError("boom")}, ["a", "c"], clock)
    mixed = asyncio.run(live2.catalogue())  # c unknown: the static table stays listed
    assert mixed.resolve("claude-sonnet-4-5") is not None
    auto = mixed.resolve("auto")
    assert auto is not None and auto.context_window == 1_000_000


def test_an_account_that_does_not_answer_is_not_waited_for() -> None:
    clock = Clock()
    live, asked = _live({"a": "hang", "b": [OPUS5]}, ["a", "b"], clock)
    catalogue = asyncio.run(live.catalogue())
    assert asked == ["a", "b"]
    assert catalogue.resolve("claude-sonnet-4-5") is not None  # a unknown: the static table
    assert live.offered_ids("a") == default_catalogue().kiro_ids()
    assert live.offered_ids("b") == {"claude-opus-5"}
