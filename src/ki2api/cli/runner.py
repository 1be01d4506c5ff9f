"""Process-level entry points: `serve` (real Kiro) and `demo` (gateway + built-in emulator)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import socket
import sys
import webbrowser
from pathlib import Path

import uvicorn

from ki2api.kiro.accounts.registry import sync_discovered
from ki2api.kiro.login.credentials import discover
from ki2api.server.app import create_app
from ki2api.server.connections import raise_fd_limit
from ki2api.server.hosts import is_loopback_host
from ki2api.server.http1 import protocol_for
from ki2api.server.json_log import log_options
from ki2api.server.supervise import main as supervise
from ki2api.server.supervise import supervisor_argv
from ki2api.settings import DEFAULT_API_KEY, Settings
from ki2api.state.open_store import STORE_ERRORS, open_store, store_spec
from kiro_emulator import EmulatorConfig
from kiro_emulator import create_app as create_emulator_app

__all__ = ["demo", "no_credentials_message", "serve"]

LOGIN_HELP = (
    "How to fix it: log in once with the Kiro IDE (https://kiro.dev), which writes\n"
    "  ~/.aws/sso/cache/kiro-auth-token.json, or copy that file to ./data/.aws/sso/cache/,\n"
    "  or set KIRO_CREDS_FILE=/path/to/kiro-auth-token.json,\n"
    "  or set KIRO_REFRESH_TOKEN (and optionally KIRO_ACCESS_TOKEN).\n"
    "To try Ki2API without a Kiro account, run `ki2api demo` (a local Kiro emulator)."
)


async def _pool_size(settings: Settings) -> int:
    """How many accounts the pool will have (the store's plus the discovered ones)."""
    store = open_store(settings)  # also creates a SQLite schema before any fork
    try:
        await sync_discovered(settings, store)
        return len(await store.list_accounts())
    finally:
        await store.aclose()


def no_credentials_message(settings: Settings) -> str | None:
    """None when the pool has an account; otherwise a message naming every place searched.
    A store that cannot be used (a Redis server away) ends the program with a clear line."""
    try:
        if asyncio.run(_pool_size(settings)) > 0:  # registers the discovered login(s) too
            return None
    except STORE_ERRORS as exc:
        shown = store_spec(settings).shown
        raise SystemExit(f"ki2api: cannot use the state store {shown}: {exc}") from None
    found = discover(settings)
    places = "\n".join(f"  - {place}" for place in found.searched)
    return f"ki2api: no Kiro login found. Looked in:\n{places}\n{LOGIN_HELP}"


EXPOSURE_HELP = (
    "How to fix it: set API_KEY to a secret of your own (e.g. API_KEY=$(openssl rand -hex 24)),\n"
    "  or listen on loopback only (HOST=127.0.0.1, the default),\n"
    "  or set KI2API_ALLOW_DEFAULT_KEY=1 if something else guards this address."
)


def default_key_exposure(settings: Settings) -> str | None:
    """What is wrong when the published default key would be served beyond this machine."""
    if DEFAULT_API_KEY not in settings.api_keys or is_loopback_host(settings.host):
        return None
    return (
        f"listening on {settings.host}, which other machines can reach, with the default "
        "API key that anyone can read in the README"
    )


def _uvicorn_config(
    app: object,
    host: str,
    port: int,
    log_level: str,
    *,
    http: type[asyncio.Protocol] | str,
    log_format: str = "text",
) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        http=http,  # the bounded protocol: read deadlines and the connection cap
        log_level=log_level,
        timeout_graceful_shutdown=5,
        **log_options(log_level, log_format),
    )


def serve(settings: Settings, workers: int = 1) -> int:
    """Serve until stopped. With `workers` > 1, that many processes share the port and the
    state store (each reads its settings from the environment and `.env`, as this one did)."""
    exposed = default_key_exposure(settings)
    if exposed is not None and not settings.allow_default_key:
        print(f"ki2api: {exposed}\n{EXPOSURE_HELP}", file=sys.stderr)
        return 2
    problem = no_credentials_message(settings)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    if exposed is not None:
        print(f"ki2api: WARNING: {exposed} (KI2API_ALLOW_DEFAULT_KEY is on)", file=sys.stderr)
    raise_fd_limit()  # before the workers start: they inherit it
    if workers > 1:
        # Workers build their settings from the environment: the bind address from the
        # command line must reach them too (it decides whether Host is checked).
        os.environ["HOST"] = settings.host
        os.environ["KI2API_WORKERS"] = str(workers)  # slots are then counted in the store
        argv = supervisor_argv(
            settings.host, settings.port, workers, settings.log_level, settings.log_format
        )
        if sys.platform != "win32":  # a small supervisor: same process, without the CLI's imports
            sys.stdout.flush()
            sys.stderr.flush()
            os.execv(argv[0], argv)
        return supervise(argv[3:])
    config = _uvicorn_config(
        create_app(settings, long_lived=True),
        settings.host,
        settings.port,
        settings.log_level,
        http=protocol_for(settings),
        log_format=settings.log_format,
    )
    uvicorn.Server(config).run()
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def console_lines(url: str, admin_key: str | None) -> str:
    """The banner's console lines: the address, and the admin key when the demo made it."""
    shown = admin_key if admin_key is not None else "the ADMIN_KEY you set"
    return f"  console  : {url}/ui/\n  admin key: {shown} (sign in to the console with it)\n"


def open_console(url: str, settings: Settings, *, browser: bool) -> None:
    """Open the console in a browser when a person is looking: a terminal on stdout and a
    desktop session (DISPLAY, or macOS / Windows). Never fails: no browser, nothing opened."""
    desktop = settings.display is not None or sys.platform in ("darwin", "win32")
    if not (browser and desktop and sys.stdout.isatty()):
        return
    with contextlib.suppress(Exception):
        webbrowser.open(f"{url}/ui/", new=2)


def demo_banner(url: str, key: str, console: str = "") -> str:
    curl = (
        f"curl {url}/v1/chat/completions -H 'Authorization: Bearer {key}' "
        "-H 'Content-Type: application/json' "
        '-d \'{"model":"claude-sonnet-4-20250514","stream":true,'
        '"messages":[{"role":"user","content":"Hello, Kiro!"}]}\''
    )
    return (
        "\nKi2API demo: the gateway is talking to the built-in Kiro emulator (no account needed).\n"
        f"  base URL : {url}/v1\n  API key  : {key}\n  try      : {curl}\n"
        f"{console}Press Ctrl+C to stop.\n"
    )


async def _serve(server: uvicorn.Server) -> None:
    """Serve until told to stop. uvicorn calls sys.exit() when it cannot bind; inside a task
    that would escape as a traceback, so it ends the task instead (`started` stays False)."""
    with contextlib.suppress(SystemExit):
        await server.serve()


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> bool:
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    return bool(server.started)


def _demo_gateway_settings(settings: Settings, em_base: str, creds_dir: Path) -> Settings:
    """The gateway's settings for the demo: the emulator's hosts and its one account only."""
    return dataclasses.replace(
        settings,
        kiro_access_token=None,
        kiro_refresh_token=None,
        kiro_creds_file=creds_dir / "acct-1" / "kiro-auth-token.json",
        kiro_creds_dir=None,
        data_dir=creds_dir,  # the demo's own store: real accounts never meet the emulator
        store=None,  # (SQLite there, whatever KI2API_STORE names)
        kiro_api_base=em_base,
        kiro_auth_base=em_base,
        kiro_oidc_base=em_base,
    )


async def demo(settings: Settings, *, emulator_port: int = 0, browser: bool = True) -> int:
    exposed = default_key_exposure(settings)
    if exposed is not None:  # it only reaches the emulator: allowed, but said loudly
        print(
            f"ki2api demo: WARNING: {exposed}. The demo talks to the built-in emulator only, "
            "but set API_KEY before exposing anything else.",
            file=sys.stderr,
            flush=True,
        )
    em_port = emulator_port or _free_port()
    em_base = f"http://127.0.0.1:{em_port}"
    creds_dir = Path(settings.data_dir) / "demo"
    emulator = create_emulator_app(
        EmulatorConfig(accounts=1, credentials_dir=creds_dir, base_url=em_base)
    )
    made_admin_key = None if settings.admin_key else secrets.token_urlsafe(18)
    gateway_settings = _demo_gateway_settings(settings, em_base, creds_dir)
    if made_admin_key is not None:  # the console (/ui) is on: signed in with this key
        gateway_settings = dataclasses.replace(gateway_settings, admin_key=made_admin_key)
    raise_fd_limit()
    em_server = uvicorn.Server(
        _uvicorn_config(emulator, "127.0.0.1", em_port, "warning", http="httptools")
    )
    em_task = asyncio.create_task(_serve(em_server))
    if not await _started(em_server, em_task):
        print(f"ki2api demo: the emulator could not listen on {em_base}.", file=sys.stderr)
        return 1
    # Configured only now: uvicorn's loggers are shared, and the emulator's start-up lines
    # (another port) would only confuse the banner below.
    gw_server = uvicorn.Server(
        _uvicorn_config(
            create_app(gateway_settings, long_lived=True),
            settings.host,
            settings.port,
            settings.log_level,
            http=protocol_for(gateway_settings),
            log_format=settings.log_format,
        )
    )
    gw_task = asyncio.create_task(_serve(gw_server))
    started = await _started(gw_server, gw_task)
    if started:
        url = f"http://{settings.host}:{settings.port}"
        console = console_lines(url, made_admin_key)
        print(
            demo_banner(url, settings.api_keys[0], console),
            flush=True,  # stdout is block-buffered when piped (tee, docker logs, tests)
        )
        open_console(url, settings, browser=browser)
    else:
        print(
            f"ki2api demo: could not listen on {settings.host}:{settings.port} (see above); "
            "choose another port with --port.",
            file=sys.stderr,
        )
    await gw_task
    em_server.should_exit = True
    await em_task
    return 0 if started else 1
