"""Request validation (AN-4) and the stop-sequence finder."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.events import TextDelta
from ki2api.frontends.anthropic.stops import StopSequenceFinder
from ki2api.frontends.anthropic.wire import ServerTool, parse_messages_request

OK: dict[str, Any] = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in OK.items() if k != key}


BAD = [
    ("missing max_tokens", without("max_tokens"), "max_tokens"),
    ("missing messages", without("messages"), "messages"),
    ("missing model", without("model"), "model"),
    ("empty messages", {**OK, "messages": []}, "messages"),
    ("max_tokens a string", {**OK, "max_tokens": "5"}, "max_tokens"),
    ("negative max_tokens", {**OK, "max_tokens": -1}, "max_tokens"),
    ("temperature over 1", {**OK, "temperature": 1.5}, "temperature"),
    ("bad role", {**OK, "messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
    (
        "unknown block type",
        {**OK, "messages": [{"role": "user", "content": [{"type": "audio"}]}]},
        "messages.0.content.0",
    ),
    (
        "tool_use without id",
        {
            **OK,
            "messages": [
                {"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]}
            ],
        },
        "messages.0.content.0.id",
    ),
    ("bad tool_choice", {**OK, "tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ("bad thinking", {**OK, "thinking": {"type": "maybe"}}, "thinking.type"),
    ("stop_sequences not strings", {**OK, "stop_sequences": [1]}, "stop_sequences.0"),
]


@pytest.mark.parametrize(("body", "param"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_invalid(body: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as info:
        parse_messages_request(orjson.dumps(body))
    assert info.value.kind is ErrorKind.INVALID_REQUEST
    assert info.value.param == param


def test_open_lists_accepted() -> None:
    body = {
        **OK,
        "max_tokens": 0,
        "thinking": {"type": "adaptive", "display": "omitted", "future": 1},
        "tools": [{"type": "web_search_20260101", "name": "web_search", "allowed_domains": ["a"]}],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "x", "citations": None, "new": 1}],
            }
        ],
        "whatever": {"nested": [1, 2]},
    }
    req = parse_messages_request(orjson.dumps(body))
    assert req.max_tokens == 0
    assert isinstance(req.tools and req.tools[0], ServerTool)
    assert "whatever" in (req.model_extra or {})


@pytest.mark.parametrize(
    ("stops", "pieces", "matched"),
    [
        (["END"], ["abc E", "N", "D more"], "END"),
        (["abc", "b"], ["abc"], "b"),
        (["xyz", "yz"], ["wxyz"], "xyz"),
        (["Q"], ["none here"], None),
        ([], ["END"], None),
    ],
    ids=["across deltas", "earliest completed", "ties: the longer", "no match", "no stops"],
)
def test_stop_sequence_finder(stops: list[str], pieces: list[str], matched: str | None) -> None:
    finder = StopSequenceFinder(stops)
    finder.feed([TextDelta(p) for p in pieces])
    assert finder() == matched
