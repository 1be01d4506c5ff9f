"""OpenAI `image_url` values -> core `ImagePart`.

Accepted: `data:image/{png,jpeg,jpg,gif,webp};base64,<data>` (the media types Claude takes).
Remote `http(s)` URLs are fetched by the server before translation: `resolve_remote_images`
replaces them with data URLs (through a `RemoteImageFetcher`, `ki2api.images.fetch` in the
server), so `image_part` sees one only when fetching is turned off, and refuses it
(`_remote_image`). See docs/images.md.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.messages import ImagePart
from ki2api.frontends.openai.wire import (
    AssistantMessage,
    ChatCompletionRequest,
    ChatMessage,
    ImageURL,
    ImageURLPart,
    TextContentPart,
    ToolMessage,
    UserMessage,
    UserPart,
)
from ki2api.frontends.remote_images import RemoteImageFetcher, fetch_all
from ki2api.images.limits import (
    DEFAULT_KEEP_RECENT_USER_TURNS,
    DEFAULT_MAX_PER_REQUEST,
    PLACEHOLDER_EARLIER,
    PLACEHOLDER_OVER_LIMIT,
    too_many_images,
    user_turn_ages,
)

__all__ = [
    "SUPPORTED_MEDIA_TYPES",
    "RemoteImageFetcher",
    "image_part",
    "is_remote",
    "resolve_remote_images",
]

SUPPORTED_MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
_DATA_URL = re.compile(r"data:([^,;]*)((?:;[^,;]*)*),(.*)", re.DOTALL | re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def image_part(url: str, *, param: str) -> ImagePart:
    """The image behind `url`; any problem is an INVALID_REQUEST naming `param`."""
    stripped = url.strip()
    scheme = stripped.split(":", 1)[0].lower() if ":" in stripped else ""
    if scheme == "data":
        return _data_image(stripped, param)
    if scheme in ("http", "https"):
        return _remote_image(stripped, param)
    raise _invalid(
        "Invalid image URL: expected a data URL (data:image/png;base64,...) or an http(s) URL.",
        param,
    )


def _remote_image(url: str, param: str) -> ImagePart:
    raise _invalid(
        "Remote image URLs are not supported yet: send the image inline as a base64 data URL "
        "(data:image/png;base64,...).",
        param,
    )


def _data_image(url: str, param: str) -> ImagePart:
    match = _DATA_URL.fullmatch(url)
    if match is None:
        raise _invalid("Invalid image data URL.", param)
    media_type = match.group(1).strip().lower()
    if media_type == "image/jpg":
        media_type = "image/jpeg"
    if media_type not in SUPPORTED_MEDIA_TYPES:
        supported = ", ".join(SUPPORTED_MEDIA_TYPES)
        shown = media_type or "(none)"
        raise _invalid(
            f"Unsupported image media type {shown!r}; supported: {supported}.",
            param,
        )
    if "base64" not in (p.strip().lower() for p in match.group(2).split(";")):
        raise _invalid("Image data URLs must be base64-encoded (data:<type>;base64,...).", param)
    data = _WHITESPACE.sub("", match.group(3))
    try:
        decoded = binascii.a2b_base64(data, strict_mode=True)
    except binascii.Error:
        raise _invalid("The image data is not valid base64.", param) from None
    if not decoded:
        raise _invalid("The image data is empty.", param)
    return ImagePart(media_type=media_type, data_b64=data)


def _invalid(message: str, param: str) -> GatewayError:
    return GatewayError(ErrorKind.INVALID_REQUEST, message, param=param)


# --- remote images, fetched before translation -------------------------------------------------


def is_remote(url: str) -> bool:
    return url.strip()[:8].lower().startswith(("http://", "https://"))


async def resolve_remote_images(
    req: ChatCompletionRequest,
    fetcher: RemoteImageFetcher,
    *,
    keep_recent_user_turns: int = DEFAULT_KEEP_RECENT_USER_TURNS,
    max_images: int = DEFAULT_MAX_PER_REQUEST,
    concurrency: int = 4,
) -> ChatCompletionRequest:
    """`req` with each http(s) image URL replaced by the data URL of the fetched image.

    Remote images that `ki2api.images.limits.apply_image_limits` (called with the same limits)
    would drop are not fetched but replaced by its placeholder text: those in user turns older
    than the `keep_recent_user_turns` latest, and those past `max_images` counted newest first.
    A latest user turn with more than `max_images` images is refused as it would be there.
    Each distinct URL is fetched once, at most `concurrency` at a time; the first failure (in
    message order) is raised and the other fetches are cancelled. Returns `req` itself when it
    holds no remote image.
    """
    slots = _plan(req.messages, keep_recent_user_turns, max_images)
    if not slots:
        return req
    wanted: dict[str, str] = {}
    for slot in reversed(slots):  # message order, so the first error is the earliest one
        if slot.action == "fetch":
            wanted.setdefault(slot.url, slot.param)
    fetched = await fetch_all(fetcher, wanted, concurrency)
    messages = list(req.messages)
    contents: dict[int, list[UserPart]] = {}
    for slot in slots:
        msg = messages[slot.index]
        assert isinstance(msg, UserMessage) and not isinstance(msg.content, str)
        content = contents.setdefault(slot.index, list(msg.content))
        content[slot.part] = _replacement(content[slot.part], slot, fetched)
    for index, content in contents.items():
        messages[index] = messages[index].model_copy(update={"content": content})
    return req.model_copy(update={"messages": messages})


@dataclass(frozen=True, slots=True)
class _Slot:
    index: int  # message
    part: int  # content part
    url: str
    param: str
    action: Literal["fetch", "earlier", "over"]


def _plan(messages: Sequence[ChatMessage], keep: int, max_images: int) -> list[_Slot]:
    """The remote images, newest first, with what to do with each."""
    ages = user_turn_ages([_role(m) for m in messages])
    latest = sum(len(_images(m)) for m, age in zip(messages, ages, strict=True) if age == 0)
    if latest > max_images:
        raise too_many_images(latest, max_images)
    slots: list[_Slot] = []
    seen = 0  # images of the kept turns, newest first
    for index in reversed(range(len(messages))):
        age = ages[index]
        for part, url in reversed(_images(messages[index])):
            kept = age is not None and age < keep
            seen += kept
            if not is_remote(url):
                continue
            action: Literal["fetch", "earlier", "over"] = (
                "earlier" if not kept else "over" if seen > max_images else "fetch"
            )
            param = f"messages.{index}.content.{part}.image_url"
            slots.append(_Slot(index, part, url.strip(), param, action))
    return slots


def _role(msg: ChatMessage) -> str:
    if isinstance(msg, UserMessage | ToolMessage):
        return "user"
    return "assistant" if isinstance(msg, AssistantMessage) else "system"


def _images(msg: ChatMessage) -> list[tuple[int, str]]:
    """(part index, URL) of each image of a user message."""
    if not isinstance(msg, UserMessage) or isinstance(msg.content, str):
        return []
    return [(j, p.url) for j, p in enumerate(msg.content) if isinstance(p, ImageURLPart)]


def _replacement(
    part: UserPart, slot: _Slot, fetched: Mapping[str, ImagePart]
) -> ImageURLPart | TextContentPart:
    if slot.action == "earlier":
        return TextContentPart(type="text", text=PLACEHOLDER_EARLIER)
    if slot.action == "over":
        return TextContentPart(type="text", text=PLACEHOLDER_OVER_LIMIT)
    image = fetched[slot.url]
    detail = (
        part.image_url.detail
        if isinstance(part, ImageURLPart) and not isinstance(part.image_url, str)
        else None
    )
    url = f"data:{image.media_type};base64,{image.data_b64}"
    return ImageURLPart(type="image_url", image_url=ImageURL(url=url, detail=detail))
