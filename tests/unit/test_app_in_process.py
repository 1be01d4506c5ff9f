"""The whole gateway in process, no socket and no uvicorn: `create_app` with the scripted chat
transport (tests/support/fake_transport.py) and an httpx stand-in for Kiro's JSON services,
driven by the official openai and anthropic SDKs through httpx's ASGI transport.

What it shows: the app's assembly (routes, middleware, error handlers, lifespan) is one object
that runs anywhere; the tests that need a real socket (deadlines, disconnects, workers) are the
e2e tier's.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anthropic
import httpx
import httpx2
import openai
import pytest

from ki2api.server.app import create_app
from ki2api.settings import Settings
from tests.support.fake_pool import PROFILE_ARN
from tests.support.fake_transport import (
    FakeChatTransport,
    Posted,
    Reply,
    answer,
    exception_frame,
    http_error,
)

KEY = "in-process-key"
BASE = "http://127.0.0.1:8989"  # a loopback Host, as a local client sends it


def _token_file(where: Path) -> Path:
    cache = where / ".aws" / "sso" / "cache"
    cache.mkdir(parents=True)
    path = cache / "kiro-auth-token.json"
    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    path.write_text(
        json.dumps(
            {
                "accessToken": "tok-in-process",
                "refreshToken": "ref-in-process",
                "expiresAt": expires,
                "profileArn": PROFILE_ARN,
                "authMethod": "social",
                "provider": "Github",
            }
        )
    )
    os.chmod(path, 0o600)
    return path


def _kiro_services(request: httpx.Request) -> httpx.Response:
    """Kiro's JSON services the gateway may ask on its own (models, quota): not offered here,
    so the gateway keeps its built-in catalogue."""
    return httpx.Response(404, json={"message": "not here"})


@dataclass
class Clients:
    for_openai: httpx.AsyncClient
    for_anthropic: httpx2.AsyncClient


@asynccontextmanager
async def _gateway(tmp_path: Path, chat: FakeChatTransport) -> AsyncIterator[Clients]:
    settings = Settings(
        api_keys=(KEY,),
        kiro_creds_file=_token_file(tmp_path),
        kiro_api_base="https://q.test",
        kiro_auth_base="https://auth.test",
        kiro_oidc_base="https://oidc.test",
        home_dir=tmp_path / "home",
        work_dir=tmp_path / "work",
        data_dir=tmp_path / "data",
        image_fetch=False,
        quota_poll_s=0,
    )
    app = create_app(
        settings,
        upstream_transport=httpx.MockTransport(_kiro_services),
        chat_transport=chat,
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as for_openai,
        # the anthropic SDK runs on httpx2, which has its own ASGI transport
        httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)) as for_anthropic,
    ):
        yield Clients(for_openai, for_anthropic)


def _openai(clients: Clients, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{BASE}/v1", api_key=key, http_client=clients.for_openai, max_retries=0
    )


def _anthropic(clients: Clients) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=BASE, api_key=KEY, http_client=clients.for_anthropic, max_retries=0
    )


async def test_openai_chat_streamed_and_not(tmp_path: Path) -> None:
    chat = FakeChatTransport([answer("Hello", " world"), answer("Hi", " there")])
    async with _gateway(tmp_path, chat) as clients:
        sdk = _openai(clients)
        done = await sdk.chat.completions.create(
            model="claude-sonnet-4-20250514", messages=[{"role": "user", "content": "hi"}]
        )
        assert done.choices[0].message.content == "Hello world"
        assert done.choices[0].finish_reason == "stop"
        assert done.usage is not None and done.usage.completion_tokens > 0
        stream = await sdk.chat.completions.create(
            model="claude-sonnet-4-20250514",
            messages=[{"role": "user", "content": "hi again"}],
            stream=True,
        )
        chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hi there"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    # what went upstream: the account's token, the user's words, the chat call's path
    sent: list[Posted] = chat.posted
    assert [p.token for p in sent] == ["tok-in-process", "tok-in-process"]
    assert sent[0].url.endswith("/generateAssistantResponse")
    assert "hi" in json.dumps(sent[0].body)


async def test_anthropic_message_through_the_same_pipeline(tmp_path: Path) -> None:
    chat = FakeChatTransport([answer("Bonjour")])
    async with _gateway(tmp_path, chat) as clients:
        message = await _anthropic(clients).messages.create(
            model="claude-sonnet-4-20250514",
            max_tokens=100,
            messages=[{"role": "user", "content": "salut"}],
        )
    assert [b.text for b in message.content if b.type == "text"] == ["Bonjour"]
    assert message.stop_reason == "end_turn"
    assert len(chat.posted) == 1


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (http_error(400, "Improperly formed request."), 400),
        (Reply(200, [exception_frame("ValidationException", "Input is too long.")]), 400),
    ],
)
async def test_upstream_refusals_in_each_dialect(tmp_path: Path, reply: Reply, status: int) -> None:
    chat = FakeChatTransport(lambda _posted: reply)
    async with _gateway(tmp_path, chat) as clients:
        with pytest.raises(openai.APIStatusError) as oa:
            await _openai(clients).chat.completions.create(
                model="claude-sonnet-4-20250514", messages=[{"role": "user", "content": "x"}]
            )
        with pytest.raises(anthropic.APIStatusError) as an:
            await _anthropic(clients).messages.create(
                model="claude-sonnet-4-20250514",
                max_tokens=10,
                messages=[{"role": "user", "content": "x"}],
            )
    assert oa.value.status_code == an.value.status_code == status
    assert isinstance(oa.value.body, dict) and "message" in oa.value.body
    assert an.value.body["type"] == "error"  # type: ignore[index]


async def test_a_wrong_key_never_reaches_kiro(tmp_path: Path) -> None:
    chat = FakeChatTransport([])
    async with _gateway(tmp_path, chat) as clients:
        sdk = _openai(clients, key="wrong")
        with pytest.raises(openai.AuthenticationError):
            await sdk.chat.completions.create(
                model="claude-sonnet-4-20250514", messages=[{"role": "user", "content": "x"}]
            )
    assert chat.posted == []
