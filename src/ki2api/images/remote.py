"""The images step of a chat request: Kiro's limits applied and remote images fetched, once, on
the core `Conversation`, whatever the client's dialect.

The translators (`frontends/*/to_core.py`) turn an image given by URL into a
`core.messages.RemoteImagePart` (a placeholder that counts as one image) and know nothing of
limits. `resolve_images` then applies `limits.apply_image_limits`, so the images it drops anyway
(old turns, past the per-request count) are never downloaded, fetches the rest through a
`RemoteImageFetcher` (`images.fetch.ImageFetcher` in the server) and applies the limits again to
the fetched bytes. Each distinct URL is fetched once, at most `concurrency` at a time; the first
failure in request order is raised and the other fetches are cancelled. No httpx here: the
fetcher is passed in.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from typing import Protocol

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.messages import (
    Conversation,
    ImagePart,
    Message,
    Part,
    RemoteImagePart,
    TextPart,
    ToolResultPart,
)
from ki2api.images.limits import (
    DEFAULT_KEEP_RECENT_USER_TURNS,
    DEFAULT_MAX_PER_REQUEST,
    apply_image_limits,
)

__all__ = [
    "MAX_TOTAL_IMAGE_BYTES",
    "RemoteImageFetcher",
    "fetch_all",
    "fetch_remote_images",
    "remote_images",
    "resolve_images",
]

# The image bytes one request may download in all (each image is capped by the fetcher itself,
# 5 MiB by default, and at most 4 download at a time): what one request can hold in memory.
MAX_TOTAL_IMAGE_BYTES = 16 * 1024 * 1024


class RemoteImageFetcher(Protocol):
    """What the images step needs: `ki2api.images.fetch.ImageFetcher` is one."""

    async def fetch(self, url: str, *, param: str | None = None) -> ImagePart: ...


async def resolve_images(
    conv: Conversation,
    fetcher: RemoteImageFetcher | None,
    *,
    before_fetch: Callable[[Conversation], object] = lambda conv: None,
    concurrency: int = 4,
    keep_recent_user_turns: int = DEFAULT_KEEP_RECENT_USER_TURNS,
    max_images: int = DEFAULT_MAX_PER_REQUEST,
) -> Conversation:
    """`conv` within Kiro's image limits, its remote images fetched when `fetcher` is given
    (without one they stay placeholders: what count_tokens counts). `before_fetch` sees the
    limited conversation before any download (the text budget: no download for a request that
    is refused anyway)."""
    limits = {"keep_recent_user_turns": keep_recent_user_turns, "max_per_request": max_images}
    limited = apply_image_limits(conv, **limits)
    if fetcher is None or not remote_images(limited):
        return limited
    before_fetch(limited)
    fetched = await fetch_remote_images(limited, fetcher, concurrency)
    return apply_image_limits(fetched, **limits)


def remote_images(conv: Conversation) -> list[RemoteImagePart]:
    """The remote images of the user messages (tool results included), in request order."""
    found: list[RemoteImagePart] = []
    for msg in conv.messages:
        if msg.role != "user":
            continue
        for part in msg.parts:
            inner = part.content if isinstance(part, ToolResultPart) else (part,)
            found.extend(p for p in inner if isinstance(p, RemoteImagePart))
    return found


async def fetch_remote_images(
    conv: Conversation, fetcher: RemoteImageFetcher, concurrency: int = 4
) -> Conversation:
    """`conv` with each remote image of its user messages replaced by the fetched image."""
    wanted: dict[str, str | None] = {}
    for image in remote_images(conv):  # request order: the first error is the earliest one
        wanted.setdefault(image.url, image.param)
    if not wanted:
        return conv
    fetched = await fetch_all(fetcher, wanted, concurrency)
    messages = tuple(_fetched(msg, fetched) if msg.role == "user" else msg for msg in conv.messages)
    return dataclasses.replace(conv, messages=messages)


def _fetched(msg: Message, fetched: Mapping[str, ImagePart]) -> Message:
    def swap(part: TextPart | ImagePart) -> TextPart | ImagePart:
        return fetched[part.url] if isinstance(part, RemoteImagePart) else part

    parts: list[Part] = []
    for part in msg.parts:
        if isinstance(part, ToolResultPart):
            part = dataclasses.replace(part, content=tuple(swap(p) for p in part.content))
        elif isinstance(part, TextPart | ImagePart):
            part = swap(part)
        parts.append(part)
    return Message(msg.role, tuple(parts))


async def fetch_all(
    fetcher: RemoteImageFetcher,
    wanted: Mapping[str, str | None],
    concurrency: int,
    *,
    max_total_bytes: int = MAX_TOTAL_IMAGE_BYTES,
) -> dict[str, ImagePart]:
    """url -> image for every `wanted` url (value: the error `param`), at most `concurrency` at
    a time, at most `max_total_bytes` of images in all (past it: a 400). The first failure
    cancels the rest and is raised."""
    gate = asyncio.Semaphore(max(1, concurrency))
    total = 0

    async def one(url: str, param: str | None) -> ImagePart:
        nonlocal total
        async with gate:
            image = await fetcher.fetch(url, param=param)
        total += len(image.data_b64) * 3 // 4
        if total > max_total_bytes:
            raise GatewayError(
                ErrorKind.INVALID_REQUEST,
                f"The request's remote images are larger than {max_total_bytes} bytes in all.",
                param=param,
                code="invalid_image_url",
            )
        return image

    tasks = [asyncio.create_task(one(url, param)) for url, param in wanted.items()]
    try:
        results = await asyncio.gather(*tasks)
    except Exception:
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        first = next((o for o in outcomes if isinstance(o, Exception)), None)
        if first is not None:
            raise first from None
        raise
    return dict(zip(wanted, results, strict=True))
