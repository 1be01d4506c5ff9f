"""Images: what Kiro accepts (`limits`, `sniff`) and fetching remote ones safely (`fetch`).

`limits` and `sniff` are pure and import only `ki2api.core`; `fetch` is I/O at the server edge
(httpx) and is imported by the server only. Nothing is imported here, so importing the pure
modules never pulls in httpx.
"""

from __future__ import annotations

__all__: list[str] = []
