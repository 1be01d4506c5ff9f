"""`ki2api serve | demo | start | emulator | doctor | accounts | keys | usage | store |
portable`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from collections.abc import Sequence

from ki2api import __version__
from ki2api.cli.accounts_commands import add_accounts_parser, positive_int, run_accounts
from ki2api.cli.doctor import run_doctor
from ki2api.cli.keys_commands import add_keys_parser, run_keys
from ki2api.cli.login_commands import add_login_parser, run_login
from ki2api.cli.portable import add_portable_parser, run_portable
from ki2api.cli.start_command import add_start_parser, run_start
from ki2api.cli.store_commands import add_store_parser, run_store
from ki2api.cli.usage_commands import add_usage_parser, run_usage
from ki2api.kiro.endpoint import identity_for
from ki2api.settings import Settings, SettingsError, load_settings

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ki2api", description="OpenAI/Anthropic-compatible gateway over Kiro."
    )
    parser.add_argument("--version", action="version", version=f"ki2api {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the gateway against real Kiro credentials")
    demo = sub.add_parser("demo", help="serve the gateway against the built-in Kiro emulator")
    for p in (serve, demo):
        p.add_argument("--host", help="listen address (default: HOST or 127.0.0.1)")
        p.add_argument("--port", type=int, help="listen port (default: PORT or 8989)")
    serve.add_argument(
        "--workers", type=positive_int, help="worker processes (default: KI2API_WORKERS or 1)"
    )
    demo.add_argument("--emulator-port", type=int, default=0, help="emulator port (default: any)")
    demo.add_argument(
        "--no-browser", action="store_true", help="do not open the console in a browser"
    )
    sub.add_parser("emulator", help="run the Kiro emulator alone (see `ki2api emulator -h`)")
    doctor = sub.add_parser("doctor", help="diagnose the Kiro login and the upstream")
    doctor.add_argument("--no-upstream", action="store_true", help="do not contact Kiro")
    add_accounts_parser(sub)
    add_keys_parser(sub)
    add_usage_parser(sub)
    add_store_parser(sub)
    add_login_parser(sub)
    add_start_parser(sub, positive_int)
    add_portable_parser(sub)
    return parser


def _with_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    host = getattr(args, "host", None)
    port = getattr(args, "port", None)
    host = settings.host if host is None else host
    port = settings.port if port is None else port
    return dataclasses.replace(settings, host=host, port=port)


def _configure_logging(level: str, log_format: str = "text") -> None:
    """Our own loggers (uvicorn configures its own). The doctor reports problems itself."""
    if log_format == "json":  # LOG_FORMAT=json: one JSON object per line (server/json_log.py)
        from logging.config import dictConfig

        from ki2api.server.json_log import log_config

        dictConfig(log_config(level))
        return
    logging.basicConfig(
        level=level.upper() if level.upper() in logging.getLevelNamesMapping() else "INFO",
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per refresh call is noise


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "emulator":
        from kiro_emulator import main as emulator_main

        return emulator_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        settings = _with_flags(load_settings(), args)
        identity_for(settings)  # a bad KI2API_CLIENT_IDENTITY file stops here, with its reason
        if settings.proxy_ca_file is not None:  # and so does a bad KI2API_PROXY_CA_FILE
            from ki2api.http_client import proxy_tls

            proxy_tls(settings)
    except SettingsError as exc:
        print(f"ki2api: configuration error: {exc}", file=sys.stderr)
        return 2
    quiet = args.command in ("doctor", "accounts", "keys", "usage", "portable", "login", "store")
    _configure_logging("error" if quiet else settings.log_level, settings.log_format)
    try:
        return _run(args, settings)
    except KeyboardInterrupt:  # Ctrl+C: the servers have shut down already; no traceback
        return 130


# the commands that only need their settings and arguments
_COMMANDS = {
    "accounts": run_accounts,
    "keys": run_keys,
    "usage": run_usage,
    "store": run_store,
    "login": run_login,
    "portable": run_portable,
    "start": run_start,
}


def _run(args: argparse.Namespace, settings: Settings) -> int:
    command = _COMMANDS.get(args.command)
    if command is not None:
        return command(settings, args)
    if args.command not in ("serve", "demo"):
        return asyncio.run(run_doctor(settings, contact_upstream=not args.no_upstream))
    # The servers (FastAPI, uvicorn) load only to serve: the other commands start in a third of
    # the time without them.
    from ki2api.cli.runner import demo, serve

    if args.command == "demo":
        return asyncio.run(
            demo(settings, emulator_port=args.emulator_port, browser=not args.no_browser)
        )
    workers = settings.workers if args.workers is None else args.workers
    if workers < 1:
        print("ki2api: configuration error: KI2API_WORKERS must be at least 1", file=sys.stderr)
        return 2
    return serve(settings, workers=workers)


if __name__ == "__main__":
    raise SystemExit(main())
