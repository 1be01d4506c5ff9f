"""The console's pages: `/` and `/ui` (a redirect to the overview), `/ui/{page}` (the one-page
app's `index.html`, or the "console is off" page without ADMIN_KEY) and `/ui/static/{file}` (its
assets, shipped as package data). Every answer carries the console's security headers (a strict
content security policy: no inline script or style, no framing)."""

from __future__ import annotations

import re
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.server.chat import services_of

__all__ = ["PAGES", "SECURITY_HEADERS", "router"]

router = APIRouter()

PAGES = frozenset({"overview", "accounts", "keys", "requests", "settings"})
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}
_ASSET = re.compile(r"^[a-z0-9_-]{1,40}\.(html|js|css|svg)$")
_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
}

OFF_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Ki2API console is off</title></head>
<body>
<h1>The Ki2API console is off</h1>
<p>Set an admin key to turn it on, then open this page again:</p>
<pre>ADMIN_KEY=choose-a-long-random-secret ki2api serve</pre>
<p>Or try it with <code>make demo</code> (<code>ki2api demo</code>), which prints an admin key
and the console's address.</p>
<hr>
<h1 lang="zh">Ki2API 控制台未开启</h1>
<p lang="zh">设置管理员密钥即可开启，然后重新打开本页：</p>
<pre>ADMIN_KEY=一个足够长的随机密钥 ki2api serve</pre>
<p lang="zh">也可以运行 <code>make demo</code>（<code>ki2api demo</code>）试用，
它会打印管理员密钥和控制台地址。</p>
</body></html>
"""


def _console_on(request: Request) -> bool:
    return bool(services_of(request).settings.admin_key)


_CACHE: dict[str, bytes] = {}  # the assets never change while the process runs


def _asset(name: str) -> bytes | None:
    found = _CACHE.get(name)
    if found is None:
        try:
            static = resources.files("ki2api.server.console").joinpath("static")
            found = _CACHE[name] = static.joinpath(name).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
    return found


def _off() -> Response:
    return HTMLResponse(OFF_PAGE, headers=SECURITY_HEADERS)


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
@router.api_route("/ui", methods=["GET", "HEAD"], include_in_schema=False)
@router.api_route("/ui/", methods=["GET", "HEAD"], include_in_schema=False)
async def console_root(request: Request) -> Response:
    if not _console_on(request):
        return _off()
    return RedirectResponse("/ui/overview", status_code=302, headers=SECURITY_HEADERS)


@router.api_route("/ui/static/{name}", methods=["GET", "HEAD"], include_in_schema=False)
async def console_asset(request: Request, name: str) -> Response:
    body = _asset(name) if _ASSET.match(name) and _console_on(request) else None
    if body is None:
        raise GatewayError(ErrorKind.NOT_FOUND, f"Unknown path {request.url.path}.")
    media = _TYPES[name.rsplit(".", 1)[1]]
    return Response(body, media_type=media, headers=SECURITY_HEADERS)


@router.api_route("/ui/{page}", methods=["GET", "HEAD"], include_in_schema=False)
async def console_page(request: Request, page: str) -> Response:
    if not _console_on(request):
        return _off()
    if page not in PAGES:
        raise GatewayError(ErrorKind.NOT_FOUND, f"Unknown path {request.url.path}.")
    body = _asset("index.html")
    if body is None:
        raise GatewayError(ErrorKind.NOT_FOUND, "The console's page is missing from this install.")
    return Response(body, media_type=_TYPES["html"], headers=SECURITY_HEADERS)
