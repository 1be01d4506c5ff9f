"""A failed check of the answer's content is never the account's fault (issue 12, part 4).

Two accounts; three structured answers in a row that are prose (the emulator answers the
request's text), through the official SDKs of both dialects, streaming and not: each is the
dialect's documented error (OpenAI 502 `response_format_failed`, Anthropic 502 `api_error`),
made by one upstream call (not regenerated on the other account), and afterwards both accounts
are healthy in the store (no strike, no rest, no error) and in `/health`, and a plain request is
answered.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pydantic
import pytest

from ki2api.kiro.accounts.registry import store_path
from ki2api.state.base import Health
from ki2api.state.sqlite import SQLiteStore
from tests.conftest import API_KEY, Account, Gateway
from tests.support.procs import PoolMember, emulator_stats, make_pool

MODEL = "claude-sonnet-4-6"
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}


class City(pydantic.BaseModel):
    city: str


def prose(n: int) -> str:
    directive = json.dumps({"text": f"Paris is lovely (answer {n}).", "chunks": 4, "delay_ms": 20})
    return f"where? <emu>{directive}</emu>"


def _pool_gateway(gateway_factory: Any, emulator_url: str, tmp_path: Path) -> Any:
    members = make_pool(emulator_url, tmp_path / "creds", ["h0", "h1"])
    first = members[0]
    gateway: Gateway = gateway_factory(
        Account(first.emu_id, first.token_file, first.data),
        kiro_creds_file=None,
        kiro_creds_dir=tmp_path / "creds",
    )
    return gateway, members


def _upstream_calls(emulator_url: str, members: list[PoolMember]) -> int:
    return sum(s["chat_requests"] for s in emulator_stats(emulator_url, members).values())


def _fail_openai(gateway: Gateway, stream: bool, n: int) -> None:
    client = gateway.openai()
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}}
    messages: Any = [{"role": "user", "content": prose(n)}]
    if not stream:
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model=MODEL, messages=messages, response_format=fmt)
        assert info.value.status_code == 502
        assert info.value.code == "response_format_failed"
        return
    with pytest.raises(openai.APIError) as err:
        for _ in client.chat.completions.create(
            model=MODEL, messages=messages, response_format=fmt, stream=True
        ):
            pass
    assert "response_format" in str(err.value)


def _fail_anthropic(gateway: Gateway, stream: bool, n: int) -> None:
    client = gateway.anthropic()
    kwargs: Any = {
        "model": MODEL,
        "max_tokens": 200,
        "messages": [{"role": "user", "content": prose(n)}],
        "output_format": City,
    }
    if not stream:
        with pytest.raises(anthropic.InternalServerError) as info:
            client.messages.parse(**kwargs)
        assert info.value.status_code == 502
        assert info.value.body["error"]["type"] == "api_error"  # type: ignore[index]
        return
    with pytest.raises(anthropic.APIStatusError) as err, client.messages.stream(**kwargs) as s:
        s.get_final_message()
    assert "output_config.format" in str(err.value)


def _plain(gateway: Gateway, dialect: str) -> str:
    if dialect == "openai":
        answer = gateway.openai().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello after"}]
        )
        return answer.choices[0].message.content or ""
    message = gateway.anthropic().messages.create(
        model=MODEL, max_tokens=200, messages=[{"role": "user", "content": "hello after"}]
    )
    block = message.content[0]
    return block.text if block.type == "text" else ""


async def _store_health(gateway: Gateway) -> dict[str, Health]:
    store = SQLiteStore.open(store_path(gateway.settings))
    try:
        return await store.health()
    finally:
        store.close()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_three_failed_structured_answers_leave_the_accounts_healthy(
    gateway_factory: Any, emulator_url: str, tmp_path: Path, dialect: str, stream: bool
) -> None:
    gateway, members = _pool_gateway(gateway_factory, emulator_url, tmp_path)
    assert "hello" in _plain(gateway, dialect)  # both accounts known and one served
    before = _upstream_calls(emulator_url, members)
    for n in range(3):
        (_fail_openai if dialect == "openai" else _fail_anthropic)(gateway, stream, n)
    assert _upstream_calls(emulator_url, members) - before == 3  # never failed over
    health = asyncio.run(_store_health(gateway))
    for member in members:
        h = health.get(member.pool_id, Health(member.pool_id))
        assert (h.strikes, h.cooldown_until, h.reason, h.last_error) == (0, 0.0, None, None), h
    pool = httpx.get(f"{gateway.url}/health", headers={"x-api-key": API_KEY}).json()["pool"]
    assert {a["id"] for a in pool} == {m.pool_id for m in members}
    assert all(a["enabled"] and a["cooldown_s"] == 0 and a["reason"] is None for a in pool)
    assert "hello after" in _plain(gateway, dialect)
