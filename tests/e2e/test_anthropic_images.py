"""Anthropic `url` image sources: fetched (a local image server) and sent to Kiro as bytes,
placeholders for old turns, counted by count_tokens without being fetched."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ki2api.images.limits import PLACEHOLDER_EARLIER
from tests.conftest import Gateway
from tests.support.payloads import PNG_1X1
from tests.support.servers import serve_in_thread

MODEL = "claude-sonnet-4-6"


class ImageHost:
    def __init__(self) -> None:
        self.seen: list[str] = []
        self.app = Starlette(routes=[Route("/{name}", self.serve)])

    async def serve(self, request: Request) -> Response:
        self.seen.append(request.path_params["name"])
        return Response(base64.b64decode(PNG_1X1), media_type="image/png")


@pytest.fixture
def hosted() -> Iterator[tuple[ImageHost, str]]:
    host = ImageHost()
    with serve_in_thread(host.app) as url:
        yield host, url


def image(url: str) -> dict[str, Any]:
    return {"type": "image", "source": {"type": "url", "url": url}}


def test_url_image_fetched_and_sent(gateway_factory: Any, hosted: tuple[ImageHost, str]) -> None:
    host, base = hosted
    gw: Gateway = gateway_factory(image_fetch=True, image_allow_private=True)
    client = gw.anthropic()
    old_turns: list[Any] = []
    for i in range(6):  # the oldest turn's image is past the kept user turns
        content = [image(f"{base}/old{i}.png"), {"type": "text", "text": f"turn {i}"}]
        old_turns += [{"role": "user", "content": content}, {"role": "assistant", "content": "ok"}]
    messages: Any = [
        *old_turns,
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {
                    "type": "tool_result",
                    "tool_use_id": "t",
                    "content": [image(f"{base}/in-result.png")],
                },
                image(f"{base}/cat.png"),
            ],
        },
    ]
    messages[-2] = {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "t", "name": "shot", "input": {}}],
    }
    tools: Any = [
        {"name": "shot", "description": "Screenshot.", "input_schema": {"type": "object"}}
    ]
    counted = client.messages.count_tokens(model=MODEL, messages=messages, tools=tools)
    assert counted.input_tokens > 1_600 and host.seen == []  # counted, not fetched
    m = client.messages.create(model=MODEL, max_tokens=50, messages=messages, tools=tools)
    assert m.content
    assert "old0.png" not in host.seen
    assert {"cat.png", "in-result.png"} <= set(host.seen)
    body = gw.emulator_requests()[-1]["body"]
    current = body["conversationState"]["currentMessage"]["userInputMessage"]
    assert {"format": "png", "source": {"bytes": PNG_1X1}} in current["images"]
    assert PLACEHOLDER_EARLIER in str(body["conversationState"]["history"])


def test_url_image_refused_when_fetching_is_off(gateway: Gateway) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        gateway.anthropic().messages.create(
            model=MODEL,
            max_tokens=50,
            messages=[{"role": "user", "content": [image("https://example.com/a.png")]}],
        )
    assert "KI2API_IMAGE_FETCH" in str(info.value)
