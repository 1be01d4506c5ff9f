"""Anthropic `image` blocks with a `url` source, fetched before translation.

`resolve_remote_images` replaces each url source (in user messages and inside their
`tool_result` blocks) by the base64 source of the fetched image, through a `RemoteImageFetcher`
(`ki2api.images.fetch.ImageFetcher` in the server). Images that
`ki2api.images.limits.apply_image_limits` would drop anyway are not fetched but replaced by its
placeholder text: those in user turns older than the `keep_recent_user_turns` latest and those
past `max_images` counted newest first. Each distinct URL is fetched once, at most
`concurrency` at a time; the first failure in request order is raised.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

from ki2api.core.messages import ImagePart
from ki2api.frontends.anthropic.wire import (
    Base64Source,
    ContentBlock,
    ImageBlock,
    MessagesBase,
    TextBlock,
    ToolResultBlock,
    URLSource,
)
from ki2api.frontends.remote_images import RemoteImageFetcher, UnfetchedImages, fetch_all
from ki2api.images.limits import (
    DEFAULT_KEEP_RECENT_USER_TURNS,
    DEFAULT_MAX_PER_REQUEST,
    PLACEHOLDER_EARLIER,
    PLACEHOLDER_OVER_LIMIT,
    too_many_images,
    user_turn_ages,
)

__all__ = ["RemoteImageFetcher", "UnfetchedImages", "resolve_remote_images"]

Where = tuple[int, int, int | None]  # message, block, block inside a tool_result (or None)
Action = Literal["fetch", "earlier", "over"]
R = TypeVar("R", bound=MessagesBase)


@dataclass(frozen=True, slots=True)
class _Slot:
    where: Where
    url: str
    action: Action

    @property
    def param(self) -> str:
        i, j, k = self.where
        inner = "" if k is None else f".content.{k}"
        return f"messages.{i}.content.{j}{inner}.source"


def _images(content: list[ContentBlock]) -> list[tuple[int, int | None, ImageBlock]]:
    found: list[tuple[int, int | None, ImageBlock]] = []
    for j, block in enumerate(content):
        if isinstance(block, ImageBlock):
            found.append((j, None, block))
        elif isinstance(block, ToolResultBlock) and isinstance(block.content, list):
            found += [(j, k, b) for k, b in enumerate(block.content) if isinstance(b, ImageBlock)]
    return found


def _plan(req: MessagesBase, keep: int, max_images: int) -> list[_Slot]:
    """The url images, newest first, each with what to do with it."""
    ages = user_turn_ages([m.role for m in req.messages])
    per_message = [
        _images(m.content) if m.role == "user" and isinstance(m.content, list) else []
        for m in req.messages
    ]
    latest = sum(len(found) for found, age in zip(per_message, ages, strict=True) if age == 0)
    if latest > max_images:
        raise too_many_images(latest, max_images)
    slots: list[_Slot] = []
    seen = 0
    for i in reversed(range(len(req.messages))):
        age = ages[i]
        for j, k, block in reversed(per_message[i]):
            kept = age is not None and age < keep
            seen += kept
            if isinstance(block.source, URLSource):
                action: Action = "earlier" if not kept else "over" if seen > max_images else "fetch"
                slots.append(_Slot((i, j, k), block.source.url.strip(), action))
    return slots


async def resolve_remote_images(
    req: R,
    fetcher: RemoteImageFetcher,
    *,
    keep_recent_user_turns: int = DEFAULT_KEEP_RECENT_USER_TURNS,
    max_images: int = DEFAULT_MAX_PER_REQUEST,
    concurrency: int = 4,
) -> R:
    """`req` with url image sources replaced (the same object when there are none)."""
    slots = _plan(req, keep_recent_user_turns, max_images)
    if not slots:
        return req
    wanted: dict[str, str] = {}
    for slot in reversed(slots):  # request order: the first error is the earliest one
        if slot.action == "fetch":
            wanted.setdefault(slot.url, slot.param)
    fetched = await fetch_all(fetcher, wanted, concurrency)
    contents: dict[int, list[ContentBlock]] = {}
    for slot in slots:
        i, j, k = slot.where
        content = req.messages[i].content
        assert isinstance(content, list)
        blocks = contents.setdefault(i, list(content))
        if k is None:
            blocks[j] = _replacement(slot, fetched)
        else:
            result = blocks[j]
            assert isinstance(result, ToolResultBlock) and isinstance(result.content, list)
            inner = list(result.content)
            inner[k] = _replacement(slot, fetched)
            blocks[j] = result.model_copy(update={"content": inner})
    messages = list(req.messages)
    for i, blocks in contents.items():
        messages[i] = messages[i].model_copy(update={"content": blocks})
    return req.model_copy(update={"messages": messages})


def _replacement(slot: _Slot, fetched: Mapping[str, ImagePart]) -> ImageBlock | TextBlock:
    if slot.action != "fetch":
        text = PLACEHOLDER_EARLIER if slot.action == "earlier" else PLACEHOLDER_OVER_LIMIT
        return TextBlock(type="text", text=text)
    image = fetched[slot.url]
    source = Base64Source(type="base64", media_type=image.media_type, data=image.data_b64)
    return ImageBlock(type="image", source=source)
