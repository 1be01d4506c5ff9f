"""Images end to end: official openai SDK -> gateway (fetcher wired) -> emulator.

A local image host on 127.0.0.1 serves the remote images; the gateway fetches them with
`image_allow_private=True` (the only way to reach loopback), and refuses them by default.
Each test sets `image_fetch` itself: the shared test settings may turn fetching off so that
no other test can make the gateway reach past loopback.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ki2api.images.limits import PLACEHOLDER_EARLIER
from tests.conftest import Gateway
from tests.support.payloads import PNG_1X1
from tests.support.servers import serve_in_thread

MODEL = "claude-sonnet-4-5"
PNG = base64.b64decode(PNG_1X1)
DATA_PNG = f"data:image/png;base64,{PNG_1X1}"


class ImageHost:
    def __init__(self) -> None:
        self.seen: list[str] = []
        self.app = Starlette(routes=[Route("/{name}", self.serve)])

    async def serve(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.seen.append(name)
        if name == "big.png":
            return Response(PNG + b"\0" * 4096, media_type="image/png")
        if name.startswith("heavy"):  # 4.5 MB: under the per-image cap, four are over the total
            return Response(PNG + b"\0" * 4_500_000, media_type="image/png")
        if name == "page.html":
            return Response(b"<html></html>", media_type="text/html")
        return Response(PNG, media_type="image/png")


@pytest.fixture(scope="module")
def hosted() -> Iterator[tuple[ImageHost, str]]:
    host = ImageHost()
    with serve_in_thread(host.app) as url:
        yield host, url


@pytest.fixture
def host(hosted: tuple[ImageHost, str]) -> ImageHost:
    hosted[0].seen.clear()
    return hosted[0]


@pytest.fixture
def base(hosted: tuple[ImageHost, str]) -> str:
    return hosted[1]


def ask(*urls: str, text: str = "What is in this picture?") -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return {"role": "user", "content": parts}


def current_message(gw: Gateway) -> dict[str, Any]:
    body = gw.emulator_requests()[-1]["body"]
    msg: dict[str, Any] = body["conversationState"]["currentMessage"]["userInputMessage"]
    return msg


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_remote_image_fetched_and_sent_to_kiro(
    gateway_factory: Any, host: ImageHost, base: str, stream: bool
) -> None:
    gw: Gateway = gateway_factory(image_fetch=True, image_allow_private=True)
    client = gw.openai()
    messages: Any = [ask(f"{base}/cat.png")]
    if stream:
        chunks = list(client.chat.completions.create(model=MODEL, messages=messages, stream=True))
        assert any(c.choices and c.choices[0].delta.content for c in chunks)
    else:
        resp = client.chat.completions.create(model=MODEL, messages=messages)
        assert resp.choices[0].message.content
    assert host.seen == ["cat.png"]
    images = current_message(gw)["images"]
    assert images == [{"format": "png", "source": {"bytes": PNG_1X1}}]


def test_loopback_image_refused_by_default(
    gateway_factory: Any, host: ImageHost, base: str
) -> None:
    gw: Gateway = gateway_factory(image_fetch=True)  # image_allow_private is off by default
    messages: Any = [ask(DATA_PNG, f"{base}/cat.png")]
    with pytest.raises(openai.BadRequestError) as info:
        gw.openai().chat.completions.create(model=MODEL, messages=messages)
    body: Any = info.value.body
    assert body["param"] == "messages.0.content.2.image_url"
    assert body["code"] == "invalid_image_url"
    assert "loopback" in body["message"]
    assert host.seen == []
    assert gw.emulator_requests() == []


def test_fetching_turned_off(gateway_factory: Any, host: ImageHost, base: str) -> None:
    gw: Gateway = gateway_factory(image_fetch=False, image_allow_private=True)
    with pytest.raises(openai.BadRequestError) as info:
        gw.openai().chat.completions.create(model=MODEL, messages=[ask(f"{base}/cat.png")])  # type: ignore[list-item]
    assert "data URL" in info.value.message
    assert host.seen == []


@pytest.mark.parametrize(
    ("name", "needle", "code"),
    [
        ("big.png", "larger than the limit of 1000", "invalid_image_url"),
        ("page.html", "not an image", "invalid_image_format"),
    ],
    ids=["too-large", "not-an-image"],
)
def test_bad_remote_images(
    gateway_factory: Any, host: ImageHost, base: str, name: str, needle: str, code: str
) -> None:
    gw: Gateway = gateway_factory(image_fetch=True, image_allow_private=True, image_max_bytes=1000)
    with pytest.raises(openai.BadRequestError) as info:
        gw.openai().chat.completions.create(model=MODEL, messages=[ask(f"{base}/{name}")])  # type: ignore[list-item]
    body: Any = info.value.body
    assert (body["param"], body["code"]) == ("messages.0.content.1.image_url", code)
    assert needle in body["message"]
    assert gw.emulator_requests() == []


def test_old_history_images_become_placeholders(
    gateway_factory: Any, host: ImageHost, base: str
) -> None:
    gw: Gateway = gateway_factory(image_fetch=True, image_allow_private=True)
    messages: list[Any] = []
    for turn in range(6):
        url = DATA_PNG if turn % 2 else f"{base}/turn{turn}.png"
        messages += [ask(url, text=f"picture {turn}"), {"role": "assistant", "content": "ok"}]
    messages.pop()
    resp = gw.openai().chat.completions.create(model=MODEL, messages=messages)
    assert resp.choices[0].message.content
    state = gw.emulator_requests()[-1]["body"]["conversationState"]
    users = [h["userInputMessage"] for h in state["history"] if "userInputMessage" in h]
    users.append(state["currentMessage"]["userInputMessage"])
    assert len(users) == 6
    assert "images" not in users[0] and PLACEHOLDER_EARLIER in users[0]["content"]
    assert all(len(u["images"]) == 1 for u in users[1:])
    assert sorted(host.seen) == ["turn2.png", "turn4.png"]  # turn 0 was never fetched


def test_too_many_images_in_the_latest_message(gateway_factory: Any) -> None:
    gw: Gateway = gateway_factory()
    with pytest.raises(openai.BadRequestError) as info:
        gw.openai().chat.completions.create(model=MODEL, messages=[ask(*[DATA_PNG] * 11)])  # type: ignore[list-item]
    assert "latest message carries 11" in info.value.message
    assert gw.emulator_requests() == []


# --- bounded work before and during downloads (issue 9) ---------------------------------------


def test_the_text_budget_is_checked_before_any_download(
    gateway_factory: Any, host: ImageHost, base: str
) -> None:
    gw: Gateway = gateway_factory(image_fetch=True, image_allow_private=True)
    messages: Any = [ask(*(f"{base}/cat{i}.png" for i in range(10)), text="x" * 700_000)]
    with pytest.raises(openai.BadRequestError) as info:
        gw.openai().chat.completions.create(model=MODEL, messages=messages)
    body: Any = info.value.body
    assert body["code"] == "context_length_exceeded"
    assert host.seen == []  # refused before anything was fetched
    with pytest.raises(anthropic.BadRequestError) as refused:
        gw.anthropic().messages.create(
            model="claude-sonnet-4-6",
            max_tokens=10,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "y" * 700_000},
                        {"type": "image", "source": {"type": "url", "url": f"{base}/cat.png"}},
                    ],
                }
            ],
        )
    assert "prompt is too long" in refused.value.message
    assert host.seen == []


def test_the_images_of_one_request_are_capped_in_all(
    gateway_factory: Any, host: ImageHost, base: str
) -> None:
    gw: Gateway = gateway_factory(image_fetch=True, image_allow_private=True)
    messages: Any = [ask(*(f"{base}/heavy{i}.png" for i in range(4)))]  # 4 x 4.5 MB > 16 MiB
    with pytest.raises(openai.BadRequestError) as info:
        gw.openai().chat.completions.create(model=MODEL, messages=messages)
    body: Any = info.value.body
    assert "larger than 16777216 bytes in all" in body["message"]
    assert body["code"] == "invalid_image_url"
    assert gw.emulator_requests() == []
