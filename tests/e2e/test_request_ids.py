"""Issue 15 item 4: request ids in and out, seen by both official SDKs.

A client's `x-request-id` (printable, at most 128 characters) is kept and echoed; otherwise the
gateway makes one. Every response carries it as `x-request-id` and as Anthropic's `request-id`,
errors and streams included; the SDKs expose it as `_request_id` / `request_id`.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import API_KEY, Gateway

MODEL = "claude-sonnet-4-20250514"
MESSAGES: Any = [{"role": "user", "content": "hello"}]


def test_openai_sdk_gets_its_own_request_id_back(gateway: Gateway) -> None:
    client = gateway.openai()
    reply = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, extra_headers={"x-request-id": "trace-42 abc"}
    )
    assert reply._request_id == "trace-42 abc"
    made = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert made._request_id is not None and made._request_id.startswith("req_")
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES, stream=True, extra_headers={"x-request-id": "s-1"}
    ) as streamed:
        assert streamed.headers["x-request-id"] == "s-1"
        assert any(line.startswith("data:") for line in streamed.iter_lines())


def test_openai_errors_carry_the_request_id(gateway: Gateway) -> None:
    client = gateway.openai(api_key="wrong-key")
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, extra_headers={"x-request-id": "err-7"}
        )
    assert caught.value.request_id == "err-7"


def test_anthropic_sdk_gets_request_id_on_answers_streams_and_errors(gateway: Gateway) -> None:
    client = gateway.anthropic()
    msg = client.messages.create(
        model=MODEL, max_tokens=50, messages=MESSAGES, extra_headers={"x-request-id": "a-1"}
    )
    assert msg._request_id == "a-1"
    made = client.messages.create(model=MODEL, max_tokens=50, messages=MESSAGES)
    assert made._request_id is not None and made._request_id.startswith("req_")
    with client.messages.with_streaming_response.create(
        model=MODEL, max_tokens=50, messages=MESSAGES, stream=True
    ) as streamed:
        assert streamed.headers["request-id"] == streamed.headers["x-request-id"]
        assert streamed.headers["request-id"].startswith("req_")
        assert any(line.startswith("event:") for line in streamed.iter_lines())
    with pytest.raises(anthropic.AuthenticationError) as caught:
        gateway.anthropic(api_key="wrong-key").messages.create(
            model=MODEL, max_tokens=50, messages=MESSAGES, extra_headers={"x-request-id": "a-2"}
        )
    assert caught.value.request_id == "a-2"
    assert caught.value.body is not None and json.dumps(caught.value.body).count("a-2") == 1


@pytest.mark.parametrize(
    "given",
    ["x" * 129, "tab\there", "ünïcode", ""],
    ids=["too long", "control character", "not ascii", "empty"],
)
def test_an_unfit_request_id_is_replaced(gateway: Gateway, given: str) -> None:
    r = httpx.get(
        f"{gateway.url}/v1/models",
        headers={"authorization": f"Bearer {API_KEY}", "x-request-id": given.encode()},
    )
    assert r.status_code == 200
    assert r.headers["x-request-id"].startswith("req_") and r.headers["x-request-id"] != given
    assert r.headers["request-id"] == r.headers["x-request-id"]


def test_the_longest_fit_request_id_is_kept(gateway: Gateway) -> None:
    given = "~" * 128
    r = httpx.get(f"{gateway.url}/health", headers={"x-request-id": given})
    assert r.headers["x-request-id"] == given
