"""An agent loop of five tool rounds through `/v1/responses` with `previous_response_id`, across
`ki2api serve --workers 2` (a real subprocess against the session emulator), with the official
openai SDK.

Two SDK clients each keep one keep-alive connection, and the two connections are held by
different worker processes (each asks `/health`, which names the worker's pid, over its own
connection; every answer's local port shows it came over that same connection). The rounds
alternate between the clients, so every continuation names a response that the *other* worker
stored: the stored conversation has to come from the shared SQLite store in the data dir, not
from a worker's memory. Each upstream request is checked to carry the whole conversation so
far (every earlier tool call and its result, the first user message); a deletion made through
one worker is seen by the other.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest

from tests.support.procs import GatewayProc, PoolMember, make_pool, pool_env

KEY = "responses-workers-key"
MODEL = "claude-sonnet-4-5"
CITIES = ["Paris", "Rome", "Oslo", "Lima", "Kyiv"]  # one tool round each
TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def call(city: str) -> str:
    directive = {"tool_calls": [{"name": "get_weather", "input": {"city": city}}]}
    return f"<emu>{json.dumps(directive)}</emu>"


@dataclass
class Pinned:
    """An SDK client whose one keep-alive connection is held by one worker process."""

    client: openai.OpenAI
    http: httpx2.Client
    ports: list[int] = field(default_factory=list)  # local port of every answer's connection
    worker: int = 0

    @classmethod
    def open(cls, url: str) -> Pinned:
        ports: list[int] = []

        def note_port(response: httpx2.Response) -> None:
            stream = response.extensions["network_stream"]
            ports.append(stream.get_extra_info("socket").getsockname()[1])

        limits = httpx2.Limits(max_connections=1, max_keepalive_connections=1)
        http = httpx2.Client(limits=limits, timeout=60, event_hooks={"response": [note_port]})
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, http_client=http, max_retries=0)
        pinned = cls(client, http, ports)
        pinned.worker = pinned.ask_worker(url)
        return pinned

    def ask_worker(self, url: str) -> int:
        answer = self.http.get(f"{url}/health", headers={"x-api-key": KEY})
        answer.raise_for_status()
        return int(answer.json()["pid"])

    def close(self) -> None:
        self.client.close()
        self.http.close()


@pytest.fixture
def gateway_2w(tmp_path: Path, emulator_url: str) -> Iterator[tuple[GatewayProc, PoolMember]]:
    home, cwd, creds, data = (tmp_path / n for n in ("home", "cwd", "creds", "data"))
    for folder in (home, cwd, creds):
        folder.mkdir()
    [member] = make_pool(emulator_url, creds, ["r0"])
    env = pool_env(emulator_url, creds, data, KEY)
    gw = GatewayProc.serve(home, cwd, workers=2, **env)
    try:
        yield gw, member
    finally:
        gw.stop()


def pin_two_workers(url: str) -> tuple[Pinned, Pinned]:
    """Open clients until two hold connections to different workers (accepts are the kernel's)."""
    first = Pinned.open(url)
    for _ in range(200):
        other = Pinned.open(url)
        if other.worker != first.worker:
            return first, other
        other.close()
    first.close()
    pytest.fail("200 connections all went to one worker")


def create(pinned: Pinned, stream: bool, **params: Any) -> Any:
    if not stream:
        return pinned.client.responses.create(model=MODEL, tools=[TOOL], **params)
    with pinned.client.responses.stream(model=MODEL, tools=[TOOL], **params) as events:
        for _ in events:
            pass
        return events.get_final_response()


def last_upstream(emulator_url: str, member: PoolMember) -> dict[str, Any]:
    entries = httpx.get(f"{emulator_url}/_emulator/requests", params={"limit": 200}).json()
    mine = [
        e
        for e in entries["requests"]
        if e.get("account") == member.emu_id and "conversationState" in (e.get("body") or {})
    ]
    assert mine, "the emulator saw no chat request of this account"
    assert mine[-1].get("status", 200) == 200, mine[-1].get("rejected")
    state: dict[str, Any] = mine[-1]["body"]["conversationState"]
    return state


def check_history(state: dict[str, Any], rounds_done: int) -> None:
    """Kiro got the whole conversation: the first question, and every earlier call + result."""
    history = state["history"]
    assert "Weather in Paris?" in history[0]["userInputMessage"]["content"]
    uses = [u for h in history for u in h.get("assistantResponseMessage", {}).get("toolUses", [])]
    results = [
        r
        for h in [*history, state["currentMessage"]]
        for r in h.get("userInputMessage", {})
        .get("userInputMessageContext", {})
        .get("toolResults", [])
    ]
    assert [u["input"] for u in uses] == [{"city": c} for c in CITIES[:rounds_done]]
    assert {u["toolUseId"] for u in uses} == {r["toolUseId"] for r in results}
    assert len(results) == rounds_done


def function_call(response: Any, city: str) -> Any:
    [item] = response.output
    assert item.type == "function_call" and item.name == "get_weather"
    assert json.loads(item.arguments) == {"city": city}
    assert response.status == "completed"
    return item


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_five_tool_rounds_alternate_workers(
    gateway_2w: tuple[GatewayProc, PoolMember], emulator_url: str, stream: bool
) -> None:
    gw, member = gateway_2w
    pair = pin_two_workers(gw.url)
    try:
        answer = create(
            pair[0],
            stream,
            instructions="You are an agent.",
            input=f"Weather in Paris? {call(CITIES[0])}",
        )
        previous, stored_by = answer, [pair[0].worker]
        for n in range(1, len(CITIES) + 1):
            item = function_call(previous, CITIES[n - 1])
            nxt = f"Next: {CITIES[n]}. {call(CITIES[n])}" if n < len(CITIES) else "Summarise."
            turn = [
                {"type": "function_call_output", "call_id": item.call_id, "output": f"sunny {n}"},
                {"role": "user", "content": nxt},
            ]
            pinned = pair[n % 2]  # the other worker than the one that stored `previous`
            previous = create(pinned, stream, input=turn, previous_response_id=previous.id)
            stored_by.append(pinned.worker)
            check_history(last_upstream(emulator_url, member), n)
        assert previous.status == "completed"
        assert previous.output_text == "Echo: Summarise."

        # every answer came over the pinned connection, so the rounds alternated workers
        for pinned in pair:
            assert len(set(pinned.ports)) == 1, pinned.ports
            assert pinned.ask_worker(gw.url) == pinned.worker
        assert stored_by == [pair[n % 2].worker for n in range(len(CITIES) + 1)]
        assert len(set(stored_by)) == 2 and set(stored_by) <= set(gw.workers()), stored_by

        # a response stored by one worker is read and deleted through the other
        first_id = answer.id
        assert pair[1].client.responses.retrieve(first_id).id == first_id
        pair[1].client.responses.delete(first_id)
        with pytest.raises(openai.NotFoundError):
            pair[0].client.responses.retrieve(first_id)
    finally:
        for pinned in pair:
            pinned.close()
