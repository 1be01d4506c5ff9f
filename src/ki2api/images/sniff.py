"""What an image really is, from its first bytes (magic numbers). Pure."""

from __future__ import annotations

__all__ = ["SNIFF_BYTES", "sniff_media_type"]

SNIFF_BYTES = 12  # enough for every signature below

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_GIF = (b"GIF87a", b"GIF89a")


def sniff_media_type(head: bytes) -> str | None:
    """`image/png|jpeg|gif|webp` when `head` starts like one, else None."""
    if head.startswith(_PNG):
        return "image/png"
    if head.startswith(_JPEG):
        return "image/jpeg"
    if head.startswith(_GIF):
        return "image/gif"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None
