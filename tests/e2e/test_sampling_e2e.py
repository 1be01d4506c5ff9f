"""stop, max_tokens / max_completion_tokens and response_format, end to end (docs/sampling.md).

Official SDK (strict) -> gateway -> emulator; the emulator's `text` directive fixes the answer.
"""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from tests.conftest import Gateway

MODEL = "claude-sonnet-4-20250514"
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}


def emu(**directive: Any) -> str:
    return f"<emu>{json.dumps(directive)}</emu>"


def user(text: str, **directive: Any) -> Any:
    return [{"role": "user", "content": "go " + emu(text=text, **directive)}]


def ask(gateway: Gateway, *, stream: bool, **kwargs: Any) -> tuple[str, str | None, Any]:
    """(content, finish_reason, usage) of one answer, streamed or not."""
    client = gateway.openai()
    if not stream:
        resp = client.chat.completions.create(model=MODEL, **kwargs)
        return resp.choices[0].message.content or "", resp.choices[0].finish_reason, resp.usage
    state = ChatCompletionStreamState()
    usage = None
    for chunk in client.chat.completions.create(
        model=MODEL, stream=True, stream_options={"include_usage": True}, **kwargs
    ):
        state.handle_chunk(chunk)
        usage = chunk.usage or usage
    # get_final_completion() refuses finish "length"; the snapshot is the same accumulation.
    choice = state.current_completion_snapshot.choices[0]
    return choice.message.content or "", choice.finish_reason, usage


def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


STREAM = pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])

# --- stop ------------------------------------------------------------------------------------


@STREAM
@pytest.mark.parametrize(
    ("stop", "text", "content"),
    [
        ("STOP", "alpha beta STOP gamma", "alpha beta "),
        (["\n\n", "END"], "first line\nsecond ENDthird", "first line\nsecond "),
        (["\n\n", "END"], "para one\n\npara two END", "para one"),
        ("zzz", "no stop here", "no stop here"),
    ],
    ids=["string", "list-second", "list-first", "never"],
)
def test_stop(gateway: Gateway, stream: bool, stop: Any, text: str, content: str) -> None:
    got, finish, _ = ask(gateway, stream=stream, messages=user(text, chunks=7), stop=stop)
    assert got == content
    assert finish == "stop"


# --- max_tokens ------------------------------------------------------------------------------

LONG = "The quick brown fox jumps over the lazy dog. " * 40


@STREAM
@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_cuts_with_finish_length(gateway: Gateway, stream: bool, field: str) -> None:
    got, finish, usage = ask(gateway, stream=stream, messages=user(LONG, chunks=20), **{field: 12})
    assert finish == "length"
    assert 0 < len(got) < len(LONG) and LONG.startswith(got)
    assert usage is not None and 0 < usage.completion_tokens <= 12


def test_max_completion_tokens_wins_over_max_tokens(gateway: Gateway) -> None:
    got, finish, _ = ask(
        gateway, stream=False, messages=user(LONG), max_tokens=500, max_completion_tokens=5
    )
    assert finish == "length" and len(got) < 40


@STREAM
def test_a_short_answer_under_max_tokens_is_untouched(gateway: Gateway, stream: bool) -> None:
    got, finish, _ = ask(gateway, stream=stream, messages=user("short one"), max_tokens=100)
    assert (got, finish) == ("short one", "stop")


# --- the upstream is closed early --------------------------------------------------------------


@STREAM
@pytest.mark.parametrize("limit", [{"stop": "HALT"}, {"max_tokens": 3}], ids=["stop", "max-tokens"])
def test_the_upstream_call_is_closed_when_the_limit_is_reached(
    gateway: Gateway, stream: bool, limit: dict[str, Any]
) -> None:
    # 40 frames 250 ms apart: the scripted stream would run for about 10 s.
    text = "one two HALT " + "x" * 400
    got, finish, _ = ask(
        gateway, stream=stream, messages=user(text, chunks=40, delay_ms=250), **limit
    )
    assert finish == ("stop" if "stop" in limit else "length")
    assert len(got) < 20
    assert wait_for(lambda: gateway.emulator_stats()["streams_now"] == 0, timeout=4.0)


# --- response_format -------------------------------------------------------------------------

VALID_FORMATS = [
    ({"type": "json_object"}, '{"ok": true}', '{"ok": true}'),
    ({"type": "json_object"}, '```json\n{"ok": true}\n```', '{"ok": true}'),
    (SCHEMA_FORMAT, '{"name": "Ada", "age": 36}', '{"name": "Ada", "age": 36}'),
]


@STREAM
@pytest.mark.parametrize(
    ("fmt", "text", "content"), VALID_FORMATS, ids=["object", "fenced-object", "schema"]
)
def test_response_format_valid(
    gateway: Gateway, stream: bool, fmt: Any, text: str, content: str
) -> None:
    got, finish, _ = ask(gateway, stream=stream, messages=user(text, chunks=5), response_format=fmt)
    assert (got, finish) == (content, "stop")
    assert json.loads(got) == json.loads(content)
    sent = json.dumps(gateway.emulator_requests()[-1]["body"])
    assert "Answer with one JSON" in sent  # the instruction went upstream


INVALID_FORMATS = [
    ({"type": "json_object"}, "Sure! Here it is: {}", "not valid JSON for a JSON object"),
    ({"type": "json_object"}, "[1, 2]", "it is an array, not an object"),
    (SCHEMA_FORMAT, '{"name": "Ada", "age": "36"}', "at $.age"),
]


@pytest.mark.parametrize(
    ("fmt", "text", "words"), INVALID_FORMATS, ids=["prose", "array", "schema-mismatch"]
)
def test_response_format_invalid_non_stream_is_a_502(
    gateway: Gateway, fmt: Any, text: str, words: str
) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        ask(gateway, stream=False, messages=user(text), response_format=fmt)
    assert info.value.status_code == 502
    assert info.value.code == "response_format_failed"
    assert words in info.value.message


@pytest.mark.parametrize(
    ("fmt", "text", "words"), INVALID_FORMATS, ids=["prose", "array", "schema-mismatch"]
)
def test_response_format_invalid_stream_ends_with_an_error_event(
    gateway: Gateway, fmt: Any, text: str, words: str
) -> None:
    with pytest.raises(openai.APIError) as info:
        ask(gateway, stream=True, messages=user(text, chunks=4), response_format=fmt)
    assert words in info.value.message


def test_an_unusable_schema_is_a_400_before_anything_is_sent(gateway: Gateway) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": 7}}}
    before = len(gateway.emulator_requests())
    with pytest.raises(openai.BadRequestError) as info:
        ask(gateway, stream=False, messages=user("{}"), response_format=fmt)
    assert info.value.param == "response_format.json_schema.schema"
    assert len(gateway.emulator_requests()) == before


# --- n and logprobs (already handled by the request translation) -------------------------------


def test_n_above_one_is_refused_and_logprobs_are_null(gateway: Gateway) -> None:
    client = gateway.openai()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=user("hi"), n=2)
    assert info.value.param == "n"
    resp = client.chat.completions.create(
        model=MODEL, messages=user("hi"), logprobs=True, top_logprobs=2
    )
    assert resp.choices[0].logprobs is None
