"""OpenAI `image_url` values -> core `ImagePart`.

Accepted: `data:image/{png,jpeg,jpg,gif,webp};base64,<data>` (the media types Claude takes).
A remote `http(s)` URL becomes a `RemoteImagePart` when the gateway fetches images (the chat
pipeline's images step, `ki2api.images.remote`, fetches it and applies the limits), and is
refused when fetching is turned off (`_remote_image`). See docs/images.md.
"""

from __future__ import annotations

import binascii
import re

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.messages import ImagePart, RemoteImagePart

__all__ = ["SUPPORTED_MEDIA_TYPES", "image_part"]

SUPPORTED_MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
_DATA_URL = re.compile(r"data:([^,;]*)((?:;[^,;]*)*),(.*)", re.DOTALL | re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def image_part(url: str, *, param: str, remote: bool = False) -> ImagePart:
    """The image behind `url`; any problem is an INVALID_REQUEST naming `param`. `remote`: an
    http(s) URL is taken (fetched later), else refused."""
    stripped = url.strip()
    scheme = stripped.split(":", 1)[0].lower() if ":" in stripped else ""
    if scheme == "data":
        return _data_image(stripped, param)
    if scheme in ("http", "https"):
        if remote:
            return RemoteImagePart.placeholder(stripped, param=param)
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
