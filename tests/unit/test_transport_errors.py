"""The two network-error edges (one per client library) map foreign exceptions onto the one
taxonomy with the same table: no connection is UPSTREAM_UNAVAILABLE, no answer in time
UPSTREAM_TIMEOUT, a connection that broke off UPSTREAM_PROTOCOL."""

from __future__ import annotations

import aiohttp
import httpx
import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.http_client import map_transport_errors
from ki2api.kiro.transport import AiohttpChatTransport, map_aiohttp_errors

REQ = httpx.Request("POST", "https://example.invalid/")

HTTPX = [
    ("connect timeout", httpx.ConnectTimeout("t", request=REQ), ErrorKind.UPSTREAM_UNAVAILABLE),
    ("pool timeout", httpx.PoolTimeout("t", request=REQ), ErrorKind.UPSTREAM_UNAVAILABLE),
    ("read timeout", httpx.ReadTimeout("t", request=REQ), ErrorKind.UPSTREAM_TIMEOUT),
    ("connect error", httpx.ConnectError("x", request=REQ), ErrorKind.UPSTREAM_UNAVAILABLE),
    ("remote protocol", httpx.RemoteProtocolError("x", request=REQ), ErrorKind.UPSTREAM_PROTOCOL),
    ("read error", httpx.ReadError("x", request=REQ), ErrorKind.UPSTREAM_PROTOCOL),
    ("write error", httpx.WriteError("x", request=REQ), ErrorKind.UPSTREAM_PROTOCOL),
    ("other", httpx.UnsupportedProtocol("x", request=REQ), ErrorKind.UPSTREAM_ERROR),
]


@pytest.mark.parametrize(("name", "exc", "kind"), HTTPX, ids=[c[0] for c in HTTPX])
def test_httpx_errors(name: str, exc: Exception, kind: ErrorKind) -> None:
    with pytest.raises(GatewayError) as info, map_transport_errors():
        raise exc
    assert info.value.kind is kind


AIOHTTP = [
    ("timeout", TimeoutError(), ErrorKind.UPSTREAM_TIMEOUT),
    ("server timeout", aiohttp.ServerTimeoutError(), ErrorKind.UPSTREAM_TIMEOUT),
    ("read timeout", aiohttp.SocketTimeoutError(), ErrorKind.UPSTREAM_TIMEOUT),
    ("connect timeout", aiohttp.ConnectionTimeoutError(), ErrorKind.UPSTREAM_UNAVAILABLE),
    ("reset", aiohttp.ClientOSError(104, "Connection reset by peer"), ErrorKind.UPSTREAM_PROTOCOL),
    ("payload", aiohttp.ClientPayloadError("cut"), ErrorKind.UPSTREAM_PROTOCOL),
    ("disconnected", aiohttp.ServerDisconnectedError(), ErrorKind.UPSTREAM_PROTOCOL),
    ("other client error", aiohttp.ClientError("x"), ErrorKind.UPSTREAM_ERROR),
]


@pytest.mark.parametrize(("name", "exc", "kind"), AIOHTTP, ids=[c[0] for c in AIOHTTP])
def test_aiohttp_errors(name: str, exc: Exception, kind: ErrorKind) -> None:
    with pytest.raises(GatewayError) as info, map_aiohttp_errors():
        raise exc
    assert info.value.kind is kind
    assert "Kiro" in info.value.message


SAME_FAILURE = [
    ("connect timeout", httpx.ConnectTimeout("t", request=REQ), aiohttp.ConnectionTimeoutError()),
    ("read timeout", httpx.ReadTimeout("t", request=REQ), aiohttp.SocketTimeoutError()),
    ("cut", httpx.RemoteProtocolError("x", request=REQ), aiohttp.ClientPayloadError("x")),
    ("reset", httpx.ReadError("x", request=REQ), aiohttp.ClientOSError(104, "reset")),
]


@pytest.mark.parametrize(
    ("name", "from_httpx", "from_aiohttp"), SAME_FAILURE, ids=[c[0] for c in SAME_FAILURE]
)
def test_both_libraries_name_the_same_failure_alike(
    name: str, from_httpx: Exception, from_aiohttp: Exception
) -> None:
    with pytest.raises(GatewayError) as one, map_transport_errors():
        raise from_httpx
    with pytest.raises(GatewayError) as other, map_aiohttp_errors():
        raise from_aiohttp
    assert (one.value.kind, one.value.retryable) == (other.value.kind, other.value.retryable)


async def test_connection_refused_is_unavailable() -> None:
    chat = AiohttpChatTransport(max_connections=2, connect_timeout_s=2, read_timeout_s=2)
    try:
        with pytest.raises(GatewayError) as info:
            await chat.post("http://127.0.0.1:9/generateAssistantResponse", b"{}", {})
        assert info.value.kind is ErrorKind.UPSTREAM_UNAVAILABLE and info.value.retryable
    finally:
        await chat.aclose()


PROXY_CASES = [
    ("no proxy", {}, "https://q.us-east-1.amazonaws.com/x", None),
    (
        "https proxy",
        {"https_proxy": "http://p:3128"},
        "https://q.us-east-1.amazonaws.com/x",
        "http://p:3128",
    ),
    ("http only", {"http_proxy": "http://p:3128"}, "https://q.us-east-1.amazonaws.com/x", None),
    (
        "bypassed",
        {"https_proxy": "http://p:3128", "no_proxy": ".amazonaws.com"},
        "https://q.us-east-1.amazonaws.com/x",
        None,
    ),
]


@pytest.mark.parametrize(
    ("name", "env", "url", "expected"), PROXY_CASES, ids=[c[0] for c in PROXY_CASES]
)
def test_proxy_from_environment(
    monkeypatch: pytest.MonkeyPatch, name: str, env: dict[str, str], url: str, expected: str | None
) -> None:
    for var in (
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(var, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    chat = AiohttpChatTransport(max_connections=1, connect_timeout_s=1, read_timeout_s=1)
    assert chat._proxy_for(url) == expected
