"""Fetching the remote images of a request, shared by both frontends.

The frontends stay free of HTTP: they get an object with an async `fetch(url, param=...)`
(`ki2api.images.fetch.ImageFetcher` is one) and call `fetch_all` with the URLs they want.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

from ki2api.core.messages import ImagePart

__all__ = ["RemoteImageFetcher", "fetch_all"]


class RemoteImageFetcher(Protocol):
    """What the frontends need: `ki2api.images.fetch.ImageFetcher` is one."""

    async def fetch(self, url: str, *, param: str | None = None) -> ImagePart: ...


async def fetch_all(
    fetcher: RemoteImageFetcher, wanted: Mapping[str, str], concurrency: int
) -> dict[str, ImagePart]:
    """url -> image for every `wanted` url (value: the error `param`), at most `concurrency` at
    a time. The first failure cancels the rest and is raised."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(url: str, param: str) -> ImagePart:
        async with gate:
            return await fetcher.fetch(url, param=param)

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
