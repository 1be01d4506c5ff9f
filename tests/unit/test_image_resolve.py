"""`images.remote.resolve_images`: the remote images of a translated request fetched (a real
`ImageFetcher` and a local image server) and replaced on the core conversation, the images that
`apply_image_limits` drops never fetched."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.messages import (
    Conversation,
    ImagePart,
    RemoteImagePart,
    TextPart,
    ToolResultPart,
)
from ki2api.core.models import default_catalogue
from ki2api.frontends.anthropic.to_core import to_conversation as anthropic_to_conversation
from ki2api.frontends.anthropic.wire import parse_messages_request
from ki2api.frontends.openai.to_core import to_conversation
from ki2api.frontends.openai.wire import parse_chat_request
from ki2api.images.fetch import ImageFetcher
from ki2api.images.limits import PLACEHOLDER_EARLIER, PLACEHOLDER_OVER_LIMIT
from ki2api.images.remote import resolve_images
from tests.support.payloads import PNG_1X1
from tests.support.servers import serve_in_thread

PNG = base64.b64decode(PNG_1X1)
GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"


class Host:
    def __init__(self) -> None:
        self.seen: list[str] = []
        self.app = Starlette(routes=[Route("/{name}", self.serve)])

    async def serve(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.seen.append(name)
        if name.endswith(".gif"):
            return Response(GIF, media_type="image/gif")
        if name.endswith(".png"):
            return Response(PNG, media_type="image/png")
        return Response(b"<html>", media_type="text/html")


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Host, str]]:
    host = Host()
    with serve_in_thread(host.app) as url:
        yield host, url


@pytest.fixture
def host(served: tuple[Host, str]) -> Host:
    served[0].seen.clear()
    return served[0]


@pytest.fixture
def base(served: tuple[Host, str]) -> str:
    return served[1]


FETCHER = ImageFetcher(allow_private=True)
DATA_PNG = f"data:image/png;base64,{PNG_1X1}"


def request(*messages: dict[str, Any]) -> Conversation:
    """The OpenAI request translated as the chat pipeline does with fetching on."""
    req = parse_chat_request(orjson.dumps({"model": "claude-sonnet-4-5", "messages": messages}))
    model = default_catalogue().resolve("claude-sonnet-4-5")
    assert model is not None
    return to_conversation(req, model, remote_images=True)


def user(*parts: str | dict[str, Any]) -> dict[str, Any]:
    content = [
        {"type": "image_url", "image_url": {"url": p}} if isinstance(p, str) else p for p in parts
    ]
    return {"role": "user", "content": content}


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


ASSISTANT = {"role": "assistant", "content": "ok"}


def parts_of(conv: Conversation) -> list[list[Any]]:
    """Each message's parts: 'png'/'gif' for images, placeholders as E/O."""
    names = {PLACEHOLDER_EARLIER: "E", PLACEHOLDER_OVER_LIMIT: "O"}
    out: list[list[Any]] = []
    for m in conv.messages:
        row: list[Any] = []
        for p in m.parts:
            if isinstance(p, RemoteImagePart):
                row.append("unfetched")
            elif isinstance(p, ImagePart):
                row.append(p.media_type.removeprefix("image/"))
            elif isinstance(p, TextPart):
                row.append(names.get(p.text, p.text))
        out.append(row)
    return out


async def test_remote_urls_become_fetched_images(host: Host, base: str) -> None:
    req = request(user(text("look"), f"{base}/a.png", DATA_PNG, f"{base}/b.gif"))
    assert parts_of(req) == [["look", "unfetched", "png", "unfetched"]]
    out = await resolve_images(req, FETCHER)
    assert parts_of(out) == [["look", "png", "png", "gif"]]
    assert sorted(host.seen) == ["a.png", "b.gif"]
    assert out.messages[0].parts[1] == ImagePart("image/png", PNG_1X1)


async def test_detail_and_bare_string_form_accepted(host: Host, base: str) -> None:
    part = {"type": "image_url", "image_url": {"url": f"{base}/a.png", "detail": "low"}}
    bare = {"type": "image_url", "image_url": f"{base}/b.png"}
    out = await resolve_images(request(user(part, bare)), FETCHER)
    assert parts_of(out) == [["png", "png"]]
    assert sorted(host.seen) == ["a.png", "b.png"]


async def test_without_a_fetcher_remote_images_stay_unfetched(host: Host, base: str) -> None:
    out = await resolve_images(request(user(f"{base}/a.png", DATA_PNG)), None)
    assert parts_of(out) == [["unfetched", "png"]]
    assert host.seen == []


async def test_request_without_remote_images_is_returned_as_is(host: Host) -> None:
    req = request(user(text("hi"), DATA_PNG), ASSISTANT, {"role": "user", "content": "again"})
    assert await resolve_images(req, FETCHER) is req
    assert host.seen == []


async def test_the_text_budget_is_checked_before_any_download(host: Host, base: str) -> None:
    seen: list[list[list[Any]]] = []

    def refuse(conv: Conversation) -> None:
        seen.append(parts_of(conv))
        raise GatewayError(ErrorKind.CONTEXT_TOO_LONG, "too long")

    req = request(user(f"{base}/a.png"), ASSISTANT, user(text("b")))
    with pytest.raises(GatewayError):
        await resolve_images(req, FETCHER, before_fetch=refuse)
    assert seen == [[["unfetched"], ["ok"], ["b"]]]
    assert host.seen == []


async def test_same_url_fetched_once(host: Host, base: str) -> None:
    req = request(user(f"{base}/a.png"), ASSISTANT, user(f"{base}/a.png", f"{base}/a.png"))
    out = await resolve_images(req, FETCHER)
    assert parts_of(out) == [["png"], ["ok"], ["png", "png"]]
    assert host.seen == ["a.png"]


async def test_old_turns_get_placeholders_without_fetching(host: Host, base: str) -> None:
    req = request(
        user(f"{base}/old.png"),
        ASSISTANT,
        user(f"{base}/mid.png"),
        {"role": "system", "content": "be brief"},
        ASSISTANT,
        user(f"{base}/new.png"),
    )
    out = await resolve_images(req, FETCHER, keep_recent_user_turns=2)
    assert parts_of(out) == [["E"], ["ok"], ["png"], ["ok"], ["png"]]
    assert sorted(host.seen) == ["mid.png", "new.png"]


async def test_images_past_the_limit_not_fetched(host: Host, base: str) -> None:
    req = request(user(f"{base}/1.png", DATA_PNG), ASSISTANT, user(f"{base}/2.png", DATA_PNG))
    out = await resolve_images(req, FETCHER, max_images=3)
    assert parts_of(out) == [["O", "png"], ["ok"], ["png", "png"]]
    assert host.seen == ["2.png"]


async def test_latest_turn_over_the_limit_refused_before_fetching(host: Host, base: str) -> None:
    req = request(user(f"{base}/1.png"), user(f"{base}/2.png", DATA_PNG))
    with pytest.raises(GatewayError) as info:
        await resolve_images(req, FETCHER, max_images=2)
    assert "latest message carries 3" in info.value.message
    assert host.seen == []


async def test_first_failure_in_message_order_is_raised(host: Host, base: str) -> None:
    req = request(
        user(text("a"), f"{base}/a.png"),
        ASSISTANT,
        user(text("b"), f"{base}/bad.html", f"{base}/worse.html"),
    )
    with pytest.raises(GatewayError) as info:
        await resolve_images(req, FETCHER)
    err = info.value
    assert err.kind is ErrorKind.INVALID_REQUEST
    assert err.param == "messages.2.content.1.image_url"
    assert "not an image" in err.message


async def test_private_address_error_names_the_part(host: Host, base: str) -> None:
    req = request(user(text("a"), DATA_PNG, f"{base}/a.png"))
    with pytest.raises(GatewayError) as info:
        await resolve_images(req, ImageFetcher(), concurrency=1)
    assert info.value.param == "messages.0.content.2.image_url"
    assert "loopback address" in info.value.message
    assert host.seen == []


def anthropic(*messages: dict[str, Any]) -> Conversation:
    """An Anthropic request translated as the chat pipeline does with fetching on."""
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": messages}
    return anthropic_to_conversation(
        parse_messages_request(orjson.dumps(body)), "m", remote_images=True
    )


def url_image(url: str) -> dict[str, Any]:
    return {"type": "image", "source": {"type": "url", "url": url}}


async def test_anthropic_url_images_in_tool_results_fetched(host: Host, base: str) -> None:
    result = {"type": "tool_result", "tool_use_id": "t", "content": [url_image(f"{base}/a.gif")]}
    conv = anthropic({"role": "user", "content": [url_image(f"{base}/b.png"), result]})
    remote = [p for p in conv.messages[0].parts if isinstance(p, RemoteImagePart)]
    assert [p.param for p in remote] == ["messages.0.content.0.source"]
    out = await resolve_images(conv, FETCHER)
    image, tool_result = out.messages[0].parts
    assert image == ImagePart("image/png", PNG_1X1)
    assert isinstance(tool_result, ToolResultPart)
    assert [p.media_type for p in tool_result.content] == ["image/gif"]  # type: ignore[union-attr]
    assert sorted(host.seen) == ["a.gif", "b.png"]


def test_anthropic_url_image_of_an_assistant_message_still_refused() -> None:
    with pytest.raises(GatewayError) as info:
        anthropic(
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [url_image("https://x.example/a.png")]},
        )
    assert info.value.param == "messages.1.content.0.source"
    assert "KI2API_IMAGE_FETCH" in info.value.message
