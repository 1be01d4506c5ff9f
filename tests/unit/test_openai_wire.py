"""parse_chat_request: bodies real clients send are accepted; bad ones give a precise 400."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.frontends.openai.wire import (
    AssistantMessage,
    ChatCompletionRequest,
    ImageURLPart,
    NamedToolChoice,
    ToolMessage,
    parse_chat_request,
)

USER = [{"role": "user", "content": "hi"}]


def body(**fields: Any) -> bytes:
    return orjson.dumps({"model": "claude-sonnet-4-5", "messages": USER, **fields})


def _parse(raw: bytes) -> ChatCompletionRequest:
    return parse_chat_request(raw)


GOOD: list[tuple[str, bytes, Any]] = [
    ("minimal", body(), lambda r: r.stream is False and r.messages[0].content == "hi"),
    ("stream-null", body(stream=None), lambda r: not r.stream),
    ("int-temperature", body(temperature=2), lambda r: r.temperature == 2.0),
    ("temperature-0", body(temperature=0, top_p=1), lambda r: r.temperature == 0 and r.top_p == 1),
    ("stop-string", body(stop="END"), lambda r: r.stop == "END"),
    ("stop-list-4", body(stop=["a", "b", "c", "d"]), lambda r: r.stop == ["a", "b", "c", "d"]),
    ("max-tokens-null", body(max_tokens=None), lambda r: r.max_tokens is None),
    (
        "both-max",
        body(max_tokens=5, max_completion_tokens=7),
        lambda r: r.max_completion_tokens == 7,
    ),
    (
        "unknown-fields-kept-aside",
        body(top_k=5, thinking={"type": "enabled"}, store=False),
        lambda r: r.ignored_fields() == ["store", "thinking", "top_k"],
    ),
    (
        "ignored-but-typed",
        body(
            seed=1,
            user="u",
            metadata={"a": "b"},
            logit_bias={"50256": -100},
            frequency_penalty=0.5,
            presence_penalty=-1,
            reasoning_effort="high",
            logprobs=True,
            top_logprobs=3,
            n=1,
            parallel_tool_calls=False,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        ),
        lambda r: r.logprobs is True and r.parallel_tool_calls is False,
    ),
    (
        "stream-options",
        body(stream=True, stream_options={"include_usage": True, "include_obfuscation": False}),
        lambda r: r.stream and r.stream_options and r.stream_options.include_usage,
    ),
    ("tool-choice-string", body(tool_choice="required"), lambda r: r.tool_choice == "required"),
    (
        "tool-choice-named",
        body(tool_choice={"type": "function", "function": {"name": "f"}}),
        lambda r: isinstance(r.tool_choice, NamedToolChoice) and r.tool_choice.function.name == "f",
    ),
    (
        "tools-minimal-and-full",
        body(
            tools=[
                {"type": "function", "function": {"name": "a"}},
                {
                    "type": "function",
                    "function": {
                        "name": "b",
                        "description": "d",
                        "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
                        "strict": True,
                    },
                },
            ]
        ),
        lambda r: [t.function.name for t in r.tools or []] == ["a", "b"],
    ),
    (
        "every-role",
        body(
            messages=[
                {"role": "system", "content": [{"type": "text", "text": "s"}]},
                {"role": "developer", "content": "d"},
                {"role": "user", "content": "q", "name": "bob"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                {
                    "role": "tool",
                    "tool_call_id": "call_1",
                    "content": [{"type": "text", "text": "r"}],
                },
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
            ]
        ),
        lambda r: (
            isinstance(r.messages[3], AssistantMessage) and isinstance(r.messages[4], ToolMessage)
        ),
    ),
    (
        "cline-style-parts-with-extras",
        body(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64,aGk=", "detail": "auto"},
                        },
                    ],
                }
            ]
        ),
        lambda r: isinstance(r.messages[0].content[1], ImageURLPart),
    ),
    (
        "audio-and-file-parts-parse",
        body(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}},
                        {"type": "file", "file": {"file_data": "x"}},
                    ],
                }
            ]
        ),
        lambda r: len(r.messages[0].content) == 2,
    ),
    (
        "tool-call-type-omitted",
        body(
            messages=[
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": ""}}],
                }
            ]
        ),
        lambda r: r.messages[0].tool_calls[0].type == "function",
    ),
]


@pytest.mark.parametrize(
    ("raw", "check"), [(b, c) for _, b, c in GOOD], ids=[i for i, _, _ in GOOD]
)
def test_good_bodies(raw: bytes, check: Any) -> None:
    assert check(_parse(raw))


def msg(m: dict[str, Any]) -> bytes:
    return body(messages=[m])


# (id, body, param, a fragment of the message)
BAD: list[tuple[str, bytes, str | None, str]] = [
    ("not-json", b"{model: x}", None, "could not parse the JSON body"),
    ("empty-body", b"", None, "could not parse the JSON body"),
    ("array-body", b"[]", None, "JSON object"),
    ("string-body", b'"hi"', None, "JSON object"),
    (
        "missing-model",
        orjson.dumps({"messages": USER}),
        "model",
        "Missing required parameter: 'model'",
    ),
    ("model-int", orjson.dumps({"model": 5, "messages": USER}), "model", "expected a string"),
    ("model-empty", orjson.dumps({"model": "", "messages": USER}), "model", "non-empty"),
    ("missing-messages", orjson.dumps({"model": "m"}), "messages", "Missing required parameter"),
    ("messages-string", body(messages="hi"), "messages", "expected an array, but got a string"),
    ("messages-empty", body(messages=[]), "messages", "empty array"),
    ("message-not-object", body(messages=[5]), "messages.0", "expected an object"),
    ("bad-role", msg({"role": "bot", "content": "x"}), "messages.0.role", '"bot"'),
    (
        "function-role",
        msg({"role": "function", "content": "x", "name": "f"}),
        "messages.0.role",
        "Supported values",
    ),
    ("missing-role", msg({"content": "x"}), "messages.0.role", "Missing required parameter"),
    (
        "content-int",
        msg({"role": "user", "content": 5}),
        "messages.0.content",
        "a string or an array",
    ),
    ("user-content-missing", msg({"role": "user"}), "messages.0.content", "Missing"),
    ("user-content-null", msg({"role": "user", "content": None}), "messages.0.content", "got null"),
    (
        "part-missing-text",
        msg({"role": "user", "content": [{"type": "text"}]}),
        "messages.0.content.0.text",
        "Missing",
    ),
    (
        "part-text-int",
        msg({"role": "user", "content": [{"type": "text", "text": 1}]}),
        "messages.0.content.0.text",
        "expected a string",
    ),
    (
        "part-bad-type",
        msg({"role": "user", "content": [{"type": "video"}]}),
        "messages.0.content.0.type",
        '"video"',
    ),
    (
        "image-url-int",
        msg({"role": "user", "content": [{"type": "image_url", "image_url": {"url": 3}}]}),
        "messages.0.content.0.image_url.url",
        "expected a string",
    ),
    (
        "tool-missing-id",
        msg({"role": "tool", "content": "x"}),
        "messages.0.tool_call_id",
        "Missing",
    ),
    (
        "system-image",
        msg({"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}),
        "messages.0.content.0.type",
        "Supported values",
    ),
    (
        "arguments-object",
        msg(
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "f", "arguments": {}}}
                ],
            }
        ),
        "messages.0.tool_calls.0.function.arguments",
        "expected a string, but got an object",
    ),
    ("stream-yes", body(stream="yes"), "stream", "expected a boolean"),
    ("stream-1", body(stream=1), "stream", "expected a boolean"),
    ("temperature-string", body(temperature="0.5"), "temperature", "expected a number"),
    ("temperature-bool", body(temperature=True), "temperature", "expected a number"),
    ("temperature-3", body(temperature=3), "temperature", "Expected a value <= 2, but got 3"),
    ("temperature-negative", body(temperature=-0.5), "temperature", ">= 0"),
    ("top-p-2", body(top_p=2), "top_p", "<= 1"),
    ("max-tokens-0", body(max_tokens=0), "max_tokens", ">= 1"),
    ("max-completion-negative", body(max_completion_tokens=-5), "max_completion_tokens", ">= 1"),
    ("max-tokens-float", body(max_tokens=1.5), "max_tokens", "expected an integer"),
    ("n-0", body(n=0), "n", ">= 1"),
    ("stop-5", body(stop=["a", "b", "c", "d", "e"]), "stop", "maximum length 4"),
    ("stop-int", body(stop=5), "stop", "a string or an array"),
    ("tool-choice-any", body(tool_choice="any"), "tool_choice", '"any"'),
    (
        "tool-choice-no-function",
        body(tool_choice={"type": "function"}),
        "tool_choice.function",
        "Missing",
    ),
    ("tools-object", body(tools={"type": "function"}), "tools", "expected an array"),
    (
        "tool-no-name",
        body(tools=[{"type": "function", "function": {}}]),
        "tools.0.function.name",
        "Missing",
    ),
    (
        "tool-custom",
        body(tools=[{"type": "custom", "custom": {"name": "x"}}]),
        "tools.0.type",
        '"custom"',
    ),
    ("stream-options-string", body(stream_options="yes"), "stream_options", "expected an object"),
    (
        "empty-tool-call-id",
        body(
            messages=[
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                },
            ]
        ),
        "messages.1.tool_calls.0.id",
        "",
    ),
    (
        "empty-tool-call-id-in-tool-message",
        body(messages=[{"role": "tool", "tool_call_id": "", "content": "x"}]),
        "messages.0.tool_call_id",
        "",
    ),
]


@pytest.mark.parametrize(
    ("raw", "param", "fragment"), [(b, p, f) for _, b, p, f in BAD], ids=[i for i, *_ in BAD]
)
def test_bad_bodies(raw: bytes, param: str | None, fragment: str) -> None:
    with pytest.raises(GatewayError) as info:
        parse_chat_request(raw)
    err = info.value
    assert err.kind is ErrorKind.INVALID_REQUEST
    assert err.param == param
    assert fragment in err.message
