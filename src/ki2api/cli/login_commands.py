"""`ki2api login` (Builder ID device code, or Google / GitHub with a local callback) and
`ki2api accounts add-key` (a Kiro API key): logging in on a machine without the Kiro IDE.

`login` writes the token file where discovery looks (`~/.aws/sso/cache/kiro-auth-token.json`,
as the IDE does, with the Builder ID client registration beside it), or with `--store` an
account in the state store. Either way the account is registered in the store, which a running
gateway re-reads within seconds: it serves from the new login without a restart.

`add-key` reads the key from stdin (a pipe) or a prompt that does not echo, never from the
command line (shell history, `ps`). Nothing here prints a token, secret or key (keys masked).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import secrets
import sqlite3
import sys
import webbrowser
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from redis.exceptions import RedisError

from ki2api.core.errors import GatewayError
from ki2api.http_client import create_upstream_client
from ki2api.kiro.accounts.importers import AccountSourceError
from ki2api.kiro.accounts.key_accounts import add_api_key
from ki2api.kiro.accounts.registry import (
    AccountExists,
    add_account,
    sync_discovered,
)
from ki2api.kiro.login.api_key import check_key, mask_key
from ki2api.kiro.login.device_flow import BUILDER_ID_START_URL, DeviceLogin, Registered
from ki2api.kiro.login.discovery import TOKEN_FILE_NAME
from ki2api.kiro.login.login_tokens import (
    LoginExists,
    idc_login_json,
    social_login_json,
    store_login_json,
    write_login,
)
from ki2api.kiro.login.social_flow import (
    IDPS,
    CallbackListener,
    exchange_code,
    login_url,
    pkce_pair,
)
from ki2api.settings import Settings
from ki2api.state.base import StateStore
from ki2api.state.open_store import open_store

__all__ = ["add_key", "add_key_parser", "add_login_parser", "run_login"]


def add_login_parser(sub: Any) -> None:
    """Register `ki2api login` on the top-level subparsers."""
    p = sub.add_parser("login", help="log in to Kiro without the IDE (Builder ID, Google, GitHub)")
    p.add_argument(
        "method",
        nargs="?",
        choices=("builder-id", "google", "github"),
        default="builder-id",
        help="builder-id: a code confirmed in any browser (default; works over SSH); google / "
        "github: a browser on this machine comes back to a local address",
    )
    p.add_argument("--store", action="store_true", help="keep it in the state store, no file")
    p.add_argument("--id", dest="account_id", help="account id with --store (default: acct-N)")
    p.add_argument(
        "--out", type=Path, help=f"token file (default: ~/.aws/sso/cache/{TOKEN_FILE_NAME})"
    )
    p.add_argument("--force", action="store_true", help="replace an existing token file")
    p.add_argument("--region", default="us-east-1", help="Builder ID's region (default us-east-1)")
    p.add_argument(
        "--start-url", default=BUILDER_ID_START_URL, help="IAM Identity Center start URL"
    )
    p.add_argument("--open", action="store_true", help="open the address in a browser too")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (google/github)")
    p.add_argument("--poll-scale", type=float, default=1.0, help=argparse.SUPPRESS)  # tests


def add_key_parser(cmds: Any) -> None:
    """Register `accounts add-key` on the `accounts` subparsers."""
    k = cmds.add_parser("add-key", help="add a Kiro API key (ksk_…), read from stdin or a prompt")
    k.add_argument("--id", dest="account_id", help="account id (default: api-key)")
    k.add_argument("--region", help="its Q region (default: KIRO_API_REGION, else us-east-1)")
    k.add_argument("--profile-arn", help="a profile ARN to send with it (none by default)")


def _read_key() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("Kiro API key (ksk_…; not shown): ")
    return sys.stdin.readline()


async def add_key(settings: Settings, store: StateStore, args: argparse.Namespace) -> int:
    """`accounts add-key`: problems raise AccountSourceError (one line, exit 1)."""
    try:
        key = check_key(_read_key())
    except ValueError as exc:
        raise AccountSourceError(str(exc)) from None
    region = (args.region or settings.kiro_api_region or "").strip() or "us-east-1"
    try:
        record = await add_api_key(
            store, key, region=region, account_id=args.account_id, profile_arn=args.profile_arn
        )
    except AccountExists as exc:
        print(f"this key ({mask_key(key)}) is already in the pool as {exc.record.id}")
        return 0
    print(f"added {record.id} (api key {mask_key(key)}, Kiro region {region}; kept in the store)")
    return 0


def run_login(settings: Settings, args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_login(settings, args))
    except (
        GatewayError,
        LoginExists,
        AccountExists,
        AccountSourceError,
        OSError,
        sqlite3.Error,
        RedisError,
    ) as exc:
        message = exc.message if isinstance(exc, GatewayError) else str(exc)
        if isinstance(exc, LoginExists):
            message += ": use --force to replace it, --out for another file, or --store"
        print(f"ki2api login: {message}", file=sys.stderr)
        return 1


def _say(text: str, url: str | None = None, *, open_it: bool = False) -> None:
    print(text, flush=True)
    if url is not None and open_it:
        webbrowser.open(url)


async def _builder_id(
    settings: Settings, http: httpx.AsyncClient, args: argparse.Namespace
) -> tuple[dict[str, Any], Registered]:
    oidc = settings.kiro_oidc_base or f"https://oidc.{args.region}.amazonaws.com"
    flow = DeviceLogin(http, oidc, start_url=args.start_url, scale=args.poll_scale)
    client = await flow.register()
    auth = await flow.start(client)
    url = auth.verification_uri_complete or auth.verification_uri
    _say(
        "To log in with AWS Builder ID, open this address in a browser (any device will do):\n"
        f"  {url}\nand confirm the code:  {auth.user_code}\n"
        "Waiting for the confirmation (Ctrl+C gives up)...",
        url,
        open_it=args.open,
    )
    tokens = await flow.wait_for_token(client, auth)
    data = idc_login_json(tokens, region=args.region, start_url=args.start_url)
    return data, client


async def _social(
    settings: Settings, http: httpx.AsyncClient, args: argparse.Namespace
) -> dict[str, Any]:
    provider = IDPS[args.method]
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(24)
    listener = CallbackListener(state)
    await listener.start()
    try:
        url = login_url(settings.kiro_auth_base, provider, listener.redirect_uri, challenge, state)
        _say(
            f"To log in with {provider}, open this address in a browser on this machine:\n"
            f"  {url}\n(over SSH, forward the port first: ssh -L {listener.port}:127.0.0.1:"
            f"{listener.port} …)\nWaiting for the browser (Ctrl+C gives up)...",
            url,
            open_it=args.open,
        )
        result = await listener.result(args.timeout)
        if result.code is None:
            raise AccountSourceError(f"the {provider} login failed: {result.why}")
        base = settings.kiro_auth_base
        tokens = await exchange_code(http, base, result.code, verifier, listener.redirect_uri)
    finally:
        await listener.aclose()
    return social_login_json(tokens, provider=provider)


async def _login(settings: Settings, args: argparse.Namespace) -> int:
    client: Registered | None = None
    default = settings.home_dir / ".aws" / "sso" / "cache" / TOKEN_FILE_NAME
    path: Path = args.out or default
    if not args.store and path.exists() and not args.force:  # say so before the login, too
        raise LoginExists(f"{path} already exists (a Kiro IDE login?)")
    async with create_upstream_client(settings) as http:
        if args.method == "builder-id":
            data, client = await _builder_id(settings, http, args)
        else:
            data = await _social(settings, http, args)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    store = open_store(settings)
    try:
        if args.store:
            label = f"`ki2api login {args.method}` of {when}"
            record = await add_account(
                store, store_login_json(data, client), label=label, account_id=args.account_id
            )
            print(f"logged in: account {record.id} ({record.auth_method}) is in the store")
        else:
            written = write_login(path, data, client, force=args.force)
            print(f"logged in: wrote {', '.join(str(p) for p in written)} (mode 0600)")
            found = {r.path for r in await sync_discovered(settings, store)}
            if os.path.abspath(path) not in found:
                print(f"to use it: KIRO_CREDS_FILE={path}, or `ki2api accounts add {path} --link`")
                return 0
        print("a running gateway takes it in within seconds; `ki2api serve` starts one")
    finally:
        await store.aclose()
    return 0
