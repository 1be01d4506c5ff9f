"""The emulator's `POST /mcp` (Kiro web search) over HTTP, and `kiro.websearch.web_search` /
`KiroWebSearch` against it through the chat call's aiohttp transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.search_results import WebSearchResult
from ki2api.kiro.login.credentials import AuthSnapshot, KiroCredentials
from ki2api.kiro.mcp import KiroWebSearch, build_mcp_request, web_search
from ki2api.kiro.transport import AiohttpChatTransport, ChatTransport
from kiro_emulator import EmulatorConfig
from tests.component.test_credentials_emulator import login, refreshes
from tests.component.test_emulator_kit import BEARER_BODY, SOCIAL_ARN, Emu, running
from tests.support.pools import single_pool

ARN_HEADER = {"x-amzn-kiro-profile-arn": SOCIAL_ARN}


@pytest.fixture(scope="module")
def em() -> Iterator[Emu]:
    with running(EmulatorConfig(accounts=1)) as e:
        yield e


def post(em: Emu, body: Any, *, headers: dict[str, str] | None = None) -> httpx.Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    hdrs = {**em.auth(), **ARN_HEADER, **(headers or {})}
    return em.client.post(em.base + "/mcp", content=raw, headers=hdrs)


def call(query: Any, **changes: Any) -> dict[str, Any]:
    body = build_mcp_request("x", request_id="rid-7")
    body["params"]["arguments"]["query"] = query
    body.update(changes)
    return body


def test_search_answers_three_deterministic_results(em: Emu) -> None:
    r = post(em, call("Kiro IDE release notes"))
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-amzn-requestid"]
    body = r.json()
    assert body["jsonrpc"] == "2.0" and body["id"] == "rid-7" and "error" not in body
    assert body["result"]["isError"] is False
    (content,) = body["result"]["content"]
    assert content["type"] == "text"
    inner = orjson.loads(content["text"])
    assert inner["query"] == "Kiro IDE release notes" and inner["totalResults"] == 3
    assert [h["url"] for h in inner["results"]] == [
        "https://www.example.com/kiro-ide-release-notes/1",
        "https://www.example.org/kiro-ide-release-notes/2",
        "https://www.example.net/kiro-ide-release-notes/3",
    ]
    assert all("Kiro IDE release notes" in h["title"] for h in inner["results"])
    assert post(em, call("Kiro IDE release notes")).json() == body
    assert post(em, call("other")).json() != body


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, -32700),
        (b"[1]", 400, -32700),
        (call("q", jsonrpc="1.0"), 400, -32600),
        (call("q", method=7), 400, -32600),
        (call("q", method="tools/list"), 200, -32601),
        (call("q", params={"name": "web_fetch", "arguments": {"query": "q"}}), 200, -32602),
        (call("q", params="nope"), 200, -32602),
        (call(""), 200, -32602),
        (call(None), 200, -32602),
        (call("news <emu-fail> today"), 200, -32603),
    ],
    ids=[
        "not-json",
        "not-object",
        "wrong-version",
        "method-not-string",
        "unknown-method",
        "unknown-tool",
        "params-not-object",
        "empty-query",
        "no-query",
        "scripted-failure",
    ],
)
def test_json_rpc_errors(em: Emu, body: Any, status: int, code: int) -> None:
    r = post(em, body)
    assert r.status_code == status
    answer = r.json()
    assert answer["jsonrpc"] == "2.0" and "result" not in answer
    assert answer["error"]["code"] == code and answer["error"]["message"]
    last = em.client.get(em.base + "/_emulator/requests?limit=1").json()["requests"][-1]
    assert last["path"] == "/mcp" and last["status"] == status and last["rejected"]


def test_auth_and_profile_are_checked(em: Emu) -> None:
    r = em.client.post(em.base + "/mcp", content=orjson.dumps(call("q")), headers=ARN_HEADER)
    assert (r.status_code, r.json()) == (403, BEARER_BODY)
    assert r.headers["x-amzn-errortype"] == "AccessDeniedException"
    r = em.client.post(em.base + "/mcp", content=orjson.dumps(call("q")), headers=em.auth())
    assert (
        r.status_code == 400 and r.json()["message"] == "profileArn is required for this request."
    )


def test_request_log_records_the_call_without_the_token(em: Emu) -> None:
    post(em, call("logged query"))
    last = em.client.get(em.base + "/_emulator/requests?limit=1").json()["requests"][-1]
    assert last["path"] == "/mcp" and last["method"] == "POST" and last["status"] == 200
    assert last["account"] == "acct-1" and last["rejected"] is None
    assert last["body"]["params"]["arguments"]["query"] == "logged query"
    assert last["headers"]["authorization"] == "<redacted>"


# web_search() over the chat transport ---------------------------------------------------------
@pytest.fixture
async def chat() -> AsyncIterator[ChatTransport]:
    transport = AiohttpChatTransport(max_connections=4, connect_timeout_s=5, read_timeout_s=10)
    yield transport
    await transport.aclose()


def snapshot(em: Emu, account: str = "acct-1") -> AuthSnapshot:
    acct = em.state.accounts[account]
    return AuthSnapshot(acct.id, acct.access_token, acct.profile_arn, acct.auth_method, None)


async def test_web_search_returns_the_results(em: Emu, chat: ChatTransport) -> None:
    hits = await web_search(chat, em.base + "/", snapshot(em), "python 3.14", invocation_id="inv-9")
    assert hits == [
        WebSearchResult(
            f"https://www.{d}/python-3-14/{n}",
            f"python 3.14 - result {n}",
            f'Result {n} of the emulated web search for "python 3.14".',
            date,
        )
        for n, d, date in [
            (1, "example.com", "December 31, 2024"),
            (2, "example.org", "December 30, 2024"),
            (3, "example.net", "December 29, 2024"),
        ]
    ]
    last = em.client.get(em.base + "/_emulator/requests?limit=1").json()["requests"][-1]
    assert last["headers"]["x-amzn-kiro-profile-arn"] == em.state.accounts["acct-1"].profile_arn
    assert last["headers"]["amz-sdk-invocation-id"] == "inv-9"
    assert last["body"]["method"] == "tools/call"
    assert last["body"]["id"].startswith("web_search_tooluse_")


async def test_web_search_failure_is_an_upstream_error(em: Emu, chat: ChatTransport) -> None:
    with pytest.raises(GatewayError) as info:
        await web_search(chat, em.base, snapshot(em), "x <emu-fail>")
    assert info.value.kind is ErrorKind.UPSTREAM_ERROR
    assert "-32603" in info.value.message


@pytest.mark.parametrize(
    ("behaviour", "kind"),
    [
        ({"throttled": True}, ErrorKind.RATE_LIMITED),
        ({"quota_exhausted": True}, ErrorKind.QUOTA_EXHAUSTED),
        ({"suspended": True}, ErrorKind.PERMISSION),
    ],
    ids=["throttled", "quota", "suspended"],
)
async def test_web_search_http_errors_are_classified(
    chat: ChatTransport, behaviour: dict[str, Any], kind: ErrorKind
) -> None:
    with running(EmulatorConfig(accounts=0)) as e:
        created = e.client.post(
            e.base + "/_emulator/accounts", json={"count": 1, "behaviour": behaviour}
        )
        account = created.json()["accounts"][0]["id"]
        with pytest.raises(GatewayError) as info:
            await web_search(chat, e.base, snapshot(e, account), "q")
    assert info.value.kind is kind


async def test_web_search_with_a_dead_token(em: Emu, chat: ChatTransport) -> None:
    dead = AuthSnapshot("acct-1", "aoa-not-a-token", SOCIAL_ARN, "social", None)
    with pytest.raises(GatewayError) as info:
        await web_search(chat, em.base, dead, "q")
    assert info.value.kind is ErrorKind.UPSTREAM_AUTH


async def test_idc_login_needs_no_profile(chat: ChatTransport) -> None:
    with running(EmulatorConfig(accounts=1, auth_method="idc")) as e:
        no_arn = replace(snapshot(e), profile_arn=None)  # its token file has none
        hits = await web_search(chat, e.base, no_arn, "idc query")
        last = e.client.get(e.base + "/_emulator/requests?limit=1").json()["requests"][-1]
    assert len(hits) == 3
    assert "x-amzn-kiro-profile-arn" not in last["headers"]


async def test_kiro_web_search_refreshes_a_token_kiro_refuses(
    tmp_path: Path, chat: ChatTransport
) -> None:
    with running(EmulatorConfig(accounts=0)) as e:
        me = login(e.base, tmp_path)
        async with httpx.AsyncClient() as http:
            credentials = KiroCredentials.from_settings(me.settings, http)
            search = KiroWebSearch(chat, await single_pool(credentials, tmp_path), api_base=e.base)
            assert len(await search.search("first")) == 3
            before = refreshes(e.base, me.id)  # the emulator's clock may make the first proactive
            e.client.post(f"{e.base}/_emulator/accounts/{me.id}/expire").raise_for_status()
            assert len(await search.search("second")) == 3
        assert refreshes(e.base, me.id) == before + 1
        log = e.client.get(e.base + "/_emulator/requests?limit=20").json()["requests"]
    statuses = [r["status"] for r in log if r["path"] == "/mcp"]
    assert statuses == [200, 403, 200]
