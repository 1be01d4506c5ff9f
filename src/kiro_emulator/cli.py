"""`ki2api emulator --host H --port P [--accounts N] [--credentials-dir DIR] ...`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .behaviour import Behaviour
from .config import EmulatorConfig

__all__ = ["CliOptions", "main", "parse_args"]


@dataclass(frozen=True)
class CliOptions:
    host: str
    port: int
    config: EmulatorConfig
    log_level: str


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ki2api emulator", description="Run the local Kiro backend emulator."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8990)
    p.add_argument("--accounts", type=int, default=1, help="start-up accounts acct-1..acct-N")
    p.add_argument("--credentials-dir", type=Path, help="write DIR/acct-K/kiro-auth-token.json")
    p.add_argument("--auth-method", choices=("social", "idc"), default="social")
    p.add_argument("--token-ttl", type=float, default=3600.0, help="access token lifetime (s)")
    p.add_argument("--seed", type=int, default=0, help="seed for tokens and ids")
    p.add_argument(
        "--behaviour",
        default="{}",
        help="behaviour of the start-up accounts as JSON, e.g. '{\"fault_rate\": 0.1}'",
    )
    p.add_argument("--log-level", default="warning")
    return p


def _behaviour(parser: argparse.ArgumentParser, raw: str) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object")
        Behaviour().updated(value)
    except (orjson.JSONDecodeError, ValueError) as exc:
        parser.error(f"--behaviour: {exc}")
    return value


def parse_args(argv: list[str] | None = None) -> CliOptions:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.accounts < 0:
        parser.error("--accounts must be >= 0")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be 0..65535")
    if args.token_ttl < 0:
        parser.error("--token-ttl must be >= 0")
    behaviour = _behaviour(parser, args.behaviour)
    host_for_url = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
    config = EmulatorConfig(
        accounts=args.accounts,
        auth_method=args.auth_method,
        token_ttl_s=args.token_ttl,
        credentials_dir=args.credentials_dir,
        base_url=f"http://{host_for_url}:{args.port}",
        seed=args.seed,
        behaviour=behaviour,
    )
    return CliOptions(args.host, args.port, config, args.log_level)


def main(argv: list[str] | None = None) -> int:
    """Parse the flags and serve the emulator with uvicorn until interrupted."""
    import uvicorn

    from .app import create_app

    options = parse_args(argv)
    app = create_app(options.config)
    cfg = options.config
    print(f"Kiro emulator on {cfg.base_url} with {cfg.accounts} {cfg.auth_method} account(s)")
    if cfg.credentials_dir is not None:
        print(f"  token files: {cfg.credentials_dir}/acct-K/kiro-auth-token.json")
    base = cfg.base_url
    print(f"  gateway env: KIRO_API_BASE={base} KIRO_AUTH_BASE={base} KIRO_OIDC_BASE={base}")
    sys.stdout.flush()
    uvicorn.run(
        app,
        host=options.host,
        port=options.port,
        log_level=options.log_level,
        access_log=False,
        timeout_graceful_shutdown=5,  # do not wait forever for scripted slow streams
    )
    return 0
