"""Kiro's image limits applied to a `Conversation`: pure, deterministic, no I/O.

Kiro (like q-cli) takes at most 10 images in a message, at most 10 MB decoded each, and the
images of a request have a cap of their own (`kiro/request/budget.py`), so images in a long
history must go.
`apply_image_limits` makes a conversation fit, always the same way:

1. Only the most recent `keep_recent_user_turns` user turns carry images (a user turn is a run
   of user messages, tool results included, between assistant messages; the current message is
   the most recent turn). Images in older turns become the text `PLACEHOLDER_EARLIER`.
2. Images are counted newest first (latest message first, and within a message from its end).
   When the latest user turn alone holds more than `max_per_request`, the request is refused
   with a 400: the client sent them just now and should know. Otherwise the images past the
   limit, all in earlier turns, become the text `PLACEHOLDER_OVER_LIMIT`.
3. An image that is still sent and is larger than `max_bytes` decoded is refused with a 400.

Images inside tool results count and are replaced like any other (Kiro receives them on the
user message). Images of assistant messages are left alone: Kiro never receives them as images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.messages import Conversation, ImagePart, Message, Part, TextPart, ToolResultPart

__all__ = [
    "DEFAULT_KEEP_RECENT_USER_TURNS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PER_REQUEST",
    "PLACEHOLDER_EARLIER",
    "PLACEHOLDER_OVER_LIMIT",
    "apply_image_limits",
    "decoded_size",
    "too_many_images",
    "user_turn_ages",
]

DEFAULT_MAX_PER_REQUEST = 10  # Kiro / q-cli: at most 10 images in a message
DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # q-cli: 10 MB per image, decoded
DEFAULT_KEEP_RECENT_USER_TURNS = 5  # as AIClient-2-API keeps them
PLACEHOLDER_EARLIER = "[image omitted: earlier in the conversation]"
PLACEHOLDER_OVER_LIMIT = "[image omitted: over the per-request image limit]"

_Replace = Callable[[ImagePart], ImagePart | TextPart]


def user_turn_ages(roles: Sequence[str]) -> list[int | None]:
    """For each message, how many user turns follow its own: 0 for the latest user turn.

    Roles other than `user` and `assistant` (say, `system`) are skipped and get None, as do
    assistant messages; only an assistant message ends a user turn.
    """
    ages: list[int | None] = [None] * len(roles)
    age = -1
    in_user_turn = False
    for i in reversed(range(len(roles))):
        if roles[i] == "user":
            if not in_user_turn:
                age += 1
                in_user_turn = True
            ages[i] = age
        elif roles[i] == "assistant":
            in_user_turn = False
    return ages


def too_many_images(count: int, limit: int) -> GatewayError:
    """The 400 for a latest user turn with more than `limit` images."""
    return GatewayError(
        ErrorKind.INVALID_REQUEST,
        f"Too many images: the latest message carries {count}; "
        f"at most {limit} images can be sent in one request.",
        param="messages",
    )


def decoded_size(data_b64: str) -> int:
    """Bytes behind a base64 string without whitespace (padding not counted)."""
    padding = data_b64.count("=", max(0, len(data_b64) - 2))
    return (len(data_b64) - padding) * 3 // 4


def apply_image_limits(
    conv: Conversation,
    *,
    max_per_request: int = DEFAULT_MAX_PER_REQUEST,
    max_bytes: int = DEFAULT_MAX_BYTES,
    keep_recent_user_turns: int = DEFAULT_KEEP_RECENT_USER_TURNS,
) -> Conversation:
    """`conv` with the rules of the module docstring applied (the same object when unchanged)."""
    if max_per_request < 0 or max_bytes < 1 or keep_recent_user_turns < 1:
        raise ValueError("image limits must be positive (max_per_request may be 0)")
    ages = user_turn_ages([m.role for m in conv.messages])
    latest = sum(_count(m) for m, age in zip(conv.messages, ages, strict=True) if age == 0)
    if latest > max_per_request:
        raise too_many_images(latest, max_per_request)
    budget = _Budget(max_per_request, max_bytes)
    out: list[Message] = []
    for msg, age in zip(reversed(conv.messages), reversed(ages), strict=True):
        if age is None or not _count(msg):
            out.append(msg)
        elif age >= keep_recent_user_turns:
            out.append(_replace_images(msg, _earlier))
        else:
            out.append(_replace_images(msg, budget.admit))
    out.reverse()
    if tuple(out) == conv.messages:
        return conv
    return dataclasses.replace(conv, messages=tuple(out))


class _Budget:
    """Admits images newest first: the first `max_count` stay, if none is over `max_bytes`."""

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.left = max_count
        self.max_bytes = max_bytes

    def admit(self, image: ImagePart) -> ImagePart | TextPart:
        if self.left <= 0:
            return TextPart(PLACEHOLDER_OVER_LIMIT)
        size = decoded_size(image.data_b64)
        if size > self.max_bytes:
            raise GatewayError(
                ErrorKind.INVALID_REQUEST,
                f"An image is too large: {size} bytes decoded; "
                f"the limit is {self.max_bytes} bytes per image.",
                param="messages",
            )
        self.left -= 1
        return image


def _earlier(image: ImagePart) -> TextPart:
    return TextPart(PLACEHOLDER_EARLIER)


def _count(msg: Message) -> int:
    if msg.role != "user":
        return 0
    n = 0
    for part in msg.parts:
        if isinstance(part, ImagePart):
            n += 1
        elif isinstance(part, ToolResultPart):
            n += sum(isinstance(p, ImagePart) for p in part.content)
    return n


def _replace_images(msg: Message, replace: _Replace) -> Message:
    """`msg` with each image (newest first: from the end) replaced by `replace(image)`."""
    parts: list[Part] = []
    for part in reversed(msg.parts):
        if isinstance(part, ImagePart):
            parts.append(replace(part))
        elif isinstance(part, ToolResultPart):
            content = [
                replace(p) if isinstance(p, ImagePart) else p for p in reversed(part.content)
            ]
            content.reverse()
            parts.append(dataclasses.replace(part, content=tuple(content)))
        else:
            parts.append(part)
    parts.reverse()
    return Message(msg.role, tuple(parts))
