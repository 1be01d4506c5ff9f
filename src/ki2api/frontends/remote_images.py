"""Fetching the remote images of a request, shared by both frontends.

The frontends stay free of HTTP: they get an object with an async `fetch(url, param=...)`
(`ki2api.images.fetch.ImageFetcher` is one) and call `fetch_all` with the URLs they want.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.messages import ImagePart

__all__ = ["MAX_TOTAL_IMAGE_BYTES", "RemoteImageFetcher", "UnfetchedImages", "fetch_all"]

# The image bytes one request may download in all (each image is capped by the fetcher itself,
# 5 MiB by default, and at most 4 download at a time): what one request can hold in memory.
MAX_TOTAL_IMAGE_BYTES = 16 * 1024 * 1024


class RemoteImageFetcher(Protocol):
    """What the frontends need: `ki2api.images.fetch.ImageFetcher` is one."""

    async def fetch(self, url: str, *, param: str | None = None) -> ImagePart: ...


class UnfetchedImages:
    """A fetcher that downloads nothing: every url image stands for an image (counted as one)
    without being downloaded. For count_tokens, and for checking a request's text budget
    before its images are fetched."""

    async def fetch(self, url: str, *, param: str | None = None) -> ImagePart:
        return ImagePart(media_type="image/png", data_b64="AAAA")


async def fetch_all(
    fetcher: RemoteImageFetcher,
    wanted: Mapping[str, str],
    concurrency: int,
    *,
    max_total_bytes: int = MAX_TOTAL_IMAGE_BYTES,
) -> dict[str, ImagePart]:
    """url -> image for every `wanted` url (value: the error `param`), at most `concurrency` at
    a time, at most `max_total_bytes` of images in all (past it: a 400). The first failure
    cancels the rest and is raised."""
    gate = asyncio.Semaphore(max(1, concurrency))
    total = 0

    async def one(url: str, param: str) -> ImagePart:
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
