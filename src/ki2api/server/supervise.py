"""`ki2api serve --workers N`: the supervisor process, kept small.

uvicorn's supervisor binds the port and starts N worker processes; each worker imports the
whole gateway and reads its settings from the environment. The command line that asked for
the workers has imported the whole CLI (about 50 MB more than this module needs). On POSIX it
replaces itself with this module (`os.execv`: the same process id, so signals, `--workers`
children and process managers see no difference), which imports uvicorn, our protocol's
import string and the logging options only. Measured with `make bench` (its `--workers`
section sums the RSS of the process tree).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import uvicorn

from ki2api.server.http1 import IMPORT_STRING
from ki2api.server.json_log import log_options

__all__ = ["main", "supervisor_argv"]

APP_FACTORY = "ki2api.server.app:create_app_from_env"


def supervisor_argv(
    host: str, port: int, workers: int, log_level: str, log_format: str
) -> list[str]:
    """The command line of this module for these options."""
    return [
        sys.executable,
        "-m",
        "ki2api.server.supervise",
        f"--host={host}",
        f"--port={port}",
        f"--workers={workers}",
        f"--log-level={log_level}",
        f"--log-format={log_format}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ki2api serve --workers")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", default="text")
    args = parser.parse_args(argv)
    # /metrics: each worker writes its counters to files here, any worker sums them all
    # (prometheus-client's multiprocess mode); a private directory, empty at each start
    metrics_dir = tempfile.mkdtemp(prefix="ki2api-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=args.host,
            port=args.port,
            http=IMPORT_STRING,  # each worker reads its limits from the environment
            workers=args.workers,
            log_level=args.log_level,
            timeout_graceful_shutdown=5,
            **log_options(args.log_level, args.log_format),
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
