"""`ki2api start`: what the one-command start scripts run (start.sh, start.bat / start.ps1).

It serves with the Kiro login when one is found (the store's accounts, or a login discovered
as `serve` does), and otherwise says where it looked and starts the demo (the built-in emulator),
so a first run always ends in a gateway that answers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from ki2api.settings import Settings

__all__ = ["add_start_parser", "run_start"]


def add_start_parser(sub: Any, positive_int: Any) -> None:
    p = sub.add_parser(
        "start", help="serve with your Kiro login, or run the demo when none is found"
    )
    p.add_argument("--host", help="listen address (default: HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default: PORT or 8989)")
    p.add_argument(
        "--workers", type=positive_int, help="worker processes (default: KI2API_WORKERS or 1)"
    )


def run_start(settings: Settings, args: argparse.Namespace) -> int:
    from ki2api.cli.runner import demo, no_credentials_message, serve

    problem = no_credentials_message(settings)
    if problem is None:
        workers = settings.workers if args.workers is None else args.workers
        return serve(settings, workers=workers)
    print(problem, file=sys.stderr)
    print(
        "ki2api start: starting the demo instead (the built-in Kiro emulator, no account "
        "needed). Log in as said above, then start again to serve with your account.",
        file=sys.stderr,
        flush=True,
    )
    return asyncio.run(demo(settings))
