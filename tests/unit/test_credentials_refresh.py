"""ki2api.kiro.login.refresh: refresh answers and failures mapped onto the error taxonomy."""

from __future__ import annotations

import json

import httpx
import pytest

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.kiro.accounts.policy import Blame, blame
from ki2api.kiro.login.refresh import (
    classify_refresh_failure,
    parse_refresh_response,
    refresh_idc,
    refresh_social,
)
from ki2api.kiro.login.token_file import ClientRegistration

SECRET = "aor-SECRET-refresh-token"

FAILURES: list[tuple[str, int, str, ErrorKind, bool, str | None]] = [
    (
        "oidc-invalid-grant",
        400,
        '{"error":"invalid_grant","error_description":"Invalid refresh token provided"}',
        ErrorKind.UPSTREAM_AUTH,
        False,
        "invalid_grant",
    ),
    (
        "social-400-text",
        400,
        "invalid_grant: bad token",
        ErrorKind.UPSTREAM_AUTH,
        False,
        "invalid_grant",
    ),
    ("expired-401", 401, '{"message":"Unauthorized"}', ErrorKind.UPSTREAM_AUTH, False, None),
    (
        "aws-type",
        400,
        '{"__type":"com.amazonaws.ssooidc#InvalidClientException"}',
        ErrorKind.UPSTREAM_AUTH,
        False,
        "InvalidClientException",
    ),
    ("forbidden-403", 403, "", ErrorKind.UPSTREAM_AUTH, False, None),
    ("throttled-429", 429, '{"error":"slow_down"}', ErrorKind.RATE_LIMITED, True, "slow_down"),
    ("server-500", 500, "oops", ErrorKind.UPSTREAM_UNAVAILABLE, True, None),
    ("unavailable-503", 503, "", ErrorKind.UPSTREAM_UNAVAILABLE, True, None),
    ("teapot-418", 418, "", ErrorKind.UPSTREAM_ERROR, False, None),
]


@pytest.mark.parametrize(
    ("status", "body", "kind", "retryable", "code"),
    [c[1:] for c in FAILURES],
    ids=[c[0] for c in FAILURES],
)
def test_refresh_failure_classification(
    status: int, body: str, kind: ErrorKind, retryable: bool, code: str | None
) -> None:
    error = classify_refresh_failure(status, body, what="the Kiro auth service")
    assert error.kind is kind
    assert error.retryable is retryable
    assert error.upstream_status == status
    assert error.code == code
    assert "Invalid refresh token" not in error.message  # the upstream body is never echoed
    if kind is ErrorKind.UPSTREAM_AUTH:
        assert "Sign in to Kiro again" in error.message


def test_a_token_echoed_by_the_upstream_never_reaches_the_message() -> None:
    body = json.dumps({"error": "invalid_grant", "error_description": f"bad token {SECRET}"})
    error = classify_refresh_failure(400, body, what="AWS SSO-OIDC")
    assert error.code == "invalid_grant"
    assert SECRET not in error.message and SECRET not in repr(error)


GOOD: list[tuple[str, str, tuple[str, str | None, float | None, str | None]]] = [
    (
        "social-full",
        '{"accessToken":"aoa1","expiresIn":3600,"profileArn":"arn:p","refreshToken":"aor2"}',
        ("aoa1", "aor2", 3600.0, "arn:p"),
    ),
    ("social-minimal", '{"accessToken":"aoa1","expiresIn":3600}', ("aoa1", None, 3600.0, None)),
    (
        "oidc-with-nulls",
        '{"accessToken":"aoa1","expiresIn":28800,"refreshToken":"aor2","tokenType":"Bearer",'
        '"idToken":null,"aws_sso_app_session_id":null}',
        ("aoa1", "aor2", 28800.0, None),
    ),
    ("expires-as-string", '{"accessToken":"aoa9","expiresIn":"60"}', ("aoa9", None, 60.0, None)),
    ("expires-missing", '{"accessToken":"aoa9","refreshToken":""}', ("aoa9", None, None, None)),
]


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in GOOD], ids=[c[0] for c in GOOD])
def test_parse_refresh_response(
    body: str, expected: tuple[str, str | None, float | None, str | None]
) -> None:
    got = parse_refresh_response(body, what="x")
    assert (got.access_token, got.refresh_token, got.expires_in, got.profile_arn) == expected
    assert got.access_token not in repr(got)


@pytest.mark.parametrize(
    "body",
    ["<html>", "[]", '{"expiresIn":3600}', '{"accessToken":""}'],
    ids=["not-json", "array", "no-access-token", "empty-access-token"],
)
def test_bad_refresh_response_is_a_protocol_error(body: str) -> None:
    with pytest.raises(GatewayError) as caught:
        parse_refresh_response(body, what="x")
    assert caught.value.kind is ErrorKind.UPSTREAM_PROTOCOL


async def test_requests_have_the_documented_shapes() -> None:
    seen: list[tuple[str, dict[str, str]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), json.loads(request.content)))
        assert request.headers["content-type"] == "application/json"
        return httpx.Response(200, json={"accessToken": "aoa-new", "expiresIn": 3600})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        await refresh_social(http, auth_base="https://auth.test/", refresh_token="aor-1")
        reg = ClientRegistration("cid", "csecret")
        await refresh_idc(
            http, oidc_base="https://oidc.test", registration=reg, refresh_token="aor-2"
        )
    assert seen == [
        ("https://auth.test/refreshToken", {"refreshToken": "aor-1"}),
        (
            "https://oidc.test/token",
            {
                "clientId": "cid",
                "clientSecret": "csecret",
                "grantType": "refresh_token",
                "refreshToken": "aor-2",
            },
        ),
    ]


NETWORK = [
    ("connect", httpx.ConnectError("refused"), ErrorKind.UPSTREAM_UNAVAILABLE),
    ("connect-timeout", httpx.ConnectTimeout("slow"), ErrorKind.UPSTREAM_UNAVAILABLE),
    ("timeout", httpx.ReadTimeout("slow"), ErrorKind.UPSTREAM_TIMEOUT),
    ("protocol", httpx.RemoteProtocolError("eof"), ErrorKind.UPSTREAM_PROTOCOL),
]


@pytest.mark.parametrize(("exc", "kind"), [c[1:] for c in NETWORK], ids=[c[0] for c in NETWORK])
async def test_network_failures_are_retryable_and_nobody_s_fault(
    exc: Exception, kind: ErrorKind
) -> None:
    """The shared httpx table (a timeout is UPSTREAM_TIMEOUT); every one is a passing fault,
    so a refresh the network lost never rests or disables the account by itself."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(GatewayError) as caught:
            await refresh_social(http, auth_base="https://auth.test", refresh_token=SECRET)
    assert caught.value.kind is kind
    assert caught.value.retryable
    assert blame(caught.value) is Blame.NOBODY
    assert "token refresh" in caught.value.message
    assert SECRET not in caught.value.message
