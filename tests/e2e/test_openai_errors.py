"""Every error path of the OpenAI surface: right status, OpenAI's four-field error, SDK class."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import API_KEY, Gateway

MODEL = "claude-sonnet-4-20250514"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def emu(**directive: Any) -> str:
    return f"<emu>{json.dumps(directive)}</emu>"


def assert_openai_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers.get("x-request-id")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    return dict(err)


BAD_BODIES = [
    ("not json", b"{not json", "application/json"),
    ("json array", b"[1, 2]", "application/json"),
    ("empty body", b"", "application/json"),
    ("missing model", json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), None),
    ("missing messages", json.dumps({"model": MODEL}).encode(), None),
    ("empty messages", json.dumps({"model": MODEL, "messages": []}).encode(), None),
    ("messages not a list", json.dumps({"model": MODEL, "messages": "hi"}).encode(), None),
    (
        "model wrong type",
        json.dumps({"model": 5, "messages": [{"role": "user", "content": "x"}]}).encode(),
        None,
    ),
    (
        "bad role",
        json.dumps({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}).encode(),
        None,
    ),
    (
        "stream wrong type",
        json.dumps(
            {"model": MODEL, "stream": "yes", "messages": [{"role": "user", "content": "x"}]}
        ).encode(),
        None,
    ),
    (
        "content wrong type",
        json.dumps({"model": MODEL, "messages": [{"role": "user", "content": 42}]}).encode(),
        None,
    ),
    (
        "temperature out of range",
        json.dumps(
            {"model": MODEL, "temperature": 9, "messages": [{"role": "user", "content": "x"}]}
        ).encode(),
        None,
    ),
    (
        "tool message without id",
        json.dumps({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}).encode(),
        None,
    ),
    (
        "bad image data url",
        json.dumps(
            {
                "model": MODEL,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/tiff;base64,AAAA"},
                            }
                        ],
                    }
                ],
            }
        ).encode(),
        None,
    ),
]


@pytest.mark.parametrize(("name", "body", "ctype"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_input_gets_400(gateway: Gateway, name: str, body: bytes, ctype: str | None) -> None:
    headers = {**AUTH, "content-type": ctype or "application/json"}
    r = httpx.post(f"{gateway.url}/v1/chat/completions", content=body, headers=headers)
    err = assert_openai_error(r, 400)
    assert err["type"] == "invalid_request_error"
    assert gateway.emulator_requests() == []  # nothing reached Kiro


def test_huge_body_gets_413(gateway_factory: Any) -> None:
    gw: Gateway = gateway_factory(max_body_bytes=10_000)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 20_000}]}
    r = httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=AUTH)
    assert_openai_error(r, 413)


def test_huge_chunked_body_gets_413(gateway_factory: Any) -> None:
    gw: Gateway = gateway_factory(max_body_bytes=10_000)

    def parts() -> Any:
        yield b'{"model": "claude-sonnet-4-20250514", "messages": [{"role": "user", "content": "'
        for _ in range(30):
            yield b"x" * 1000
        yield b'"}]}'

    r = httpx.post(f"{gw.url}/v1/chat/completions", content=parts(), headers=AUTH)
    assert_openai_error(r, 413)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}, {"x-api-key": "nope"}],
    ids=["missing", "wrong bearer", "wrong scheme", "wrong x-api-key"],
)
def test_bad_key_gets_401(gateway: Gateway, headers: dict[str, str]) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers)
    assert_openai_error(r, 401)
    r = httpx.get(f"{gateway.url}/v1/models", headers=headers)
    if "x-api-key" in headers:  # the models routes are shared: x-api-key marks an Anthropic client
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    else:
        assert_openai_error(r, 401)


def test_sdk_raises_authentication_error(gateway: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError):
        gateway.openai(api_key="wrong").chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}]
        )


def test_unknown_model_is_404(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        gateway.openai().chat.completions.create(
            model="gpt-4o-nope", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.code == "model_not_found"


def test_unknown_path_and_method(gateway: Gateway) -> None:
    assert_openai_error(httpx.get(f"{gateway.url}/v1/nothing-here", headers=AUTH), 404)
    r = httpx.get(f"{gateway.url}/v1/chat/completions", headers=AUTH)
    assert_openai_error(r, 405)


UPSTREAM = [
    # (name, directive error, expected status, SDK class, extra check)
    (
        "throttled",
        {
            "status": 429,
            "body": {
                "message": "I am experiencing high traffic, please try again shortly.",
                "reason": "INSUFFICIENT_MODEL_CAPACITY",
            },
        },
        429,
        openai.RateLimitError,
    ),
    (
        "quota",
        {
            "status": 402,
            "body": {"message": "You have reached the limit.", "reason": "MONTHLY_REQUEST_COUNT"},
        },
        429,
        openai.RateLimitError,
    ),
    (
        "suspended",
        {
            "status": 403,
            "body": {
                "message": "Your account is temporarily suspended.",
                "reason": "TEMPORARILY_SUSPENDED",
            },
        },
        403,
        openai.PermissionDeniedError,
    ),
    (
        "high load",
        {
            "status": 500,
            "body": {
                "message": "Encountered unexpectedly high load when processing the request, "
                "please try again."
            },
        },
        503,
        openai.InternalServerError,
    ),
    (
        "unavailable",
        {
            "status": 503,
            "body": {
                "__type": "ServiceUnavailableException",
                "message": "The service is temporarily unavailable.",
            },
        },
        503,
        openai.InternalServerError,
    ),
    (
        "too long",
        {
            "status": 400,
            "body": {"message": "Input is too long.", "reason": "CONTENT_LENGTH_EXCEEDS_THRESHOLD"},
        },
        400,
        openai.BadRequestError,
    ),
    (
        "improperly formed",
        {"status": 400, "body": {"message": "Improperly formed request.", "reason": None}},
        400,
        openai.BadRequestError,
    ),
]


@pytest.mark.parametrize(("name", "error", "status", "exc"), UPSTREAM, ids=[u[0] for u in UPSTREAM])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_upstream_errors_before_first_byte_keep_their_status(
    gateway: Gateway, name: str, error: dict[str, Any], status: int, exc: type, stream: bool
) -> None:
    body = {
        "model": MODEL,
        "stream": stream,
        "messages": [{"role": "user", "content": "x" + emu(error=error)}],
    }
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=AUTH)
    err = assert_openai_error(r, status)
    if name == "throttled":
        assert int(r.headers["retry-after"]) >= 1
    if name == "quota":
        assert err["code"] == "insufficient_quota" and r.headers["x-should-retry"] == "false"
    if name == "too long":
        assert err["code"] == "context_length_exceeded"
    if name == "suspended":  # the pool disabled its only account: the next request says so
        exc = openai.InternalServerError
    with pytest.raises(exc) as caught:
        gateway.openai().chat.completions.create(
            model=MODEL, messages=body["messages"], stream=stream
        )
    if name == "suspended":
        assert "disabled (1 suspended)" in str(caught.value)


def test_mid_stream_exception_ends_with_error_not_finish(gateway: Gateway) -> None:
    content = "tell me" + emu(
        text="a b c d e f g h",
        chunks=8,
        delay_ms=30,  # the exception comes after the first content has been sent
        exception={
            "type": "ThrottlingException",
            "message": "Too many requests",
            "after_events": 3,
        },
    )
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": content}]}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, headers=AUTH) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] != "data: [DONE]"
    last = json.loads(lines[-1][6:])
    assert set(last["error"]) == {"message", "type", "param", "code"}
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
    assert any(c["choices"][0]["delta"].get("content") for c in chunks)
    with pytest.raises(openai.APIError):
        for _ in gateway.openai().chat.completions.create(
            model=MODEL, messages=body["messages"], stream=True
        ):
            pass


@pytest.mark.parametrize(
    "directive",
    [
        {"truncate_after_events": 3},
        {"text": "abcdefgh", "chunks": 4, "split_bytes": 7, "truncate_after_events": 2},
    ],
    ids=["cut mid-frame", "cut mid-frame, split bytes"],
)
def test_truncated_upstream_stream_is_an_error(gateway: Gateway, directive: dict[str, Any]) -> None:
    messages: Any = [{"role": "user", "content": "go" + emu(**directive)}]
    with pytest.raises(openai.APIError):
        for _ in gateway.openai().chat.completions.create(
            model=MODEL, messages=messages, stream=True
        ):
            pass
    with pytest.raises(openai.APIStatusError) as info:
        gateway.openai().chat.completions.create(model=MODEL, messages=messages)
    assert info.value.status_code == 502


def test_no_credentials_gives_clear_503(gateway_factory: Any, tmp_path: Any) -> None:
    gw: Gateway = gateway_factory(kiro_creds_file=tmp_path / "missing.json")
    r = httpx.post(
        f"{gw.url}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
        headers=AUTH,
    )
    err = assert_openai_error(r, 503)
    assert "kiro" in err["message"].lower()
