"""`LOG_FORMAT=json`: one JSON object per log line, for our loggers and uvicorn's alike.

Every line has `time` (UTC, ISO 8601), `level`, `logger` and `message`; a request's access line
(`server/observe.py`) adds its fields (request id, route, model, account, key name, status,
attempts, ttft_ms, duration_ms, tokens). `log_config()` is the `logging.config.dictConfig` both
the CLI and uvicorn apply (uvicorn applies it again in each worker of `--workers N`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

__all__ = ["JsonFormatter", "log_config"]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        millis = int(record.msecs)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {
            "time": f"{stamp}.{millis:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "ki2api", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def log_config(level: str) -> dict[str, Any]:
    """Every logger through one JSON handler on stderr; httpx only from warnings up."""
    name = level.upper() if level.upper() in logging.getLevelNamesMapping() else "INFO"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "json": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["json"], "level": name, "propagate": False},
            "uvicorn.error": {"level": name},
            "uvicorn.access": {"handlers": ["json"], "level": name, "propagate": False},
            "httpx": {"level": "WARNING"},
        },
        "root": {"handlers": ["json"], "level": name},
    }


def log_options(log_level: str, log_format: str) -> dict[str, Any]:
    """uvicorn's logging: its access line per request (text), or all of it as JSON with our own
    access line instead (server/observe.py), which has the request's fields."""
    if log_format != "json":
        return {"access_log": True}  # one line per request at LOG_LEVEL=info; silent at warning
    return {"access_log": False, "log_config": log_config(log_level)}
