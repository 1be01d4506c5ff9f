"""Configuration: the only module that reads the environment (and only when called).

Sources, lowest to highest precedence: defaults, a `.env` file in the working directory,
the process environment, CLI flags (applied by `cli/main.py` with `dataclasses.replace`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Settings", "SettingsError", "load_settings", "parse_dotenv"]

DEFAULT_API_KEY = "ki2api-key-2024"
DEFAULT_PORT = 8989
# The Q API host of each account's region (us-east-1 or eu-central-1: see kiro/endpoint.py).
DEFAULT_API_BASE = "https://q.{region}.amazonaws.com"


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    api_keys: tuple[str, ...] = field(default=(DEFAULT_API_KEY,), repr=False)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # Kiro login
    kiro_access_token: str | None = field(default=None, repr=False)
    kiro_refresh_token: str | None = field(default=None, repr=False)
    kiro_creds_file: Path | None = None
    kiro_creds_dir: Path | None = None  # a directory of token files: one pool account each
    kiro_profile_arn: str | None = None
    kiro_region: str | None = None  # KIRO_REGION: one Q region for every account (override)
    # Upstream hosts (point all three at the emulator for a demo)
    kiro_api_base: str = DEFAULT_API_BASE  # `{region}`: each account's Q region (kiro/endpoints)
    kiro_auth_base: str = "https://prod.us-east-1.auth.desktop.kiro.dev"
    kiro_oidc_base: str | None = None  # default: https://oidc.{token file region}.amazonaws.com
    # Where to look for token files (tests point these at temp dirs)
    home_dir: Path = field(default_factory=Path.home)
    work_dir: Path = field(default_factory=Path.cwd)
    data_dir: Path = Path("data")
    # Behaviour
    model_overrides: Mapping[str, str] = field(default_factory=dict)
    model_fallback: bool = True  # unknown Claude names -> the closest Kiro model of the family
    max_body_bytes: int = 16 * 1024 * 1024
    keepalive_interval_s: float = 15.0
    first_event_timeout_s: float = 120.0
    read_timeout_s: float = 300.0
    connect_timeout_s: float = 10.0
    refresh_ahead_s: float = 300.0
    max_connections: int = 1024  # upstream (Kiro) connection pool
    # Client connections (server/connections.py): read deadlines and a cap
    header_timeout_s: float = 10.0  # the whole request head, from its first byte
    body_timeout_s: float = 60.0  # the body, plus 1 s per 64 KiB it declares
    idle_timeout_s: float = 30.0  # silence after accept or between keep-alive requests
    max_client_connections: int = 1024  # open client connections (below the fd limit)
    # Account pool (kiro/accounts/policy.py)
    max_attempts: int = 4  # accounts tried for one request before giving up
    throttle_cooldown_s: float = 1.0  # rest after a 2nd 429 in a row (doubling, max 300 s)
    error_cooldown_s: float = 2.0  # first rest after a 5xx / network error (max 60 s)
    pool_wait_s: float = 5.0  # a request waits this long at most for a resting account
    quota_poll_s: float = 1800.0  # how often to ask getUsageLimits per account (0: never)
    # Upstream size budget (kiro/request/budget.py)
    max_upstream_bytes: int = 600_000  # the text of the body: image bytes do not count
    max_image_bytes_per_request: int = 5 * 1024 * 1024  # images of one request, base64
    max_tools: int = 119  # Kiro refuses about 120 tools and more (docs/kiro-protocol.md §3.6)
    trim_history: bool = False
    # Client version in the user agent headers (kiro/endpoint.py): keep it current
    kiro_client_version: str = "1.1.14"
    # Remote images (images/fetch.py)
    image_fetch: bool = True
    image_max_bytes: int = 5 * 1024 * 1024
    image_timeout_s: float = 10.0
    image_allow_private: bool = False
    log_level: str = "info"
    workers: int = 1  # `serve` processes sharing the state store
    # Network safety (cli/runner.py, server/hosts.py)
    allow_default_key: bool = False  # serve on a non-loopback address with DEFAULT_API_KEY
    allowed_hosts: tuple[str, ...] = ()  # extra Host names accepted on a loopback bind ("*": any)

    def redacted(self) -> dict[str, object]:
        """Settings safe to print: secrets replaced by whether they are set."""
        return {
            "api_keys": f"{len(self.api_keys)} key(s)",
            "host": self.host,
            "port": self.port,
            "kiro_access_token": "set" if self.kiro_access_token else "unset",
            "kiro_refresh_token": "set" if self.kiro_refresh_token else "unset",
            "kiro_creds_file": str(self.kiro_creds_file) if self.kiro_creds_file else None,
            "kiro_creds_dir": str(self.kiro_creds_dir) if self.kiro_creds_dir else None,
            "kiro_api_base": self.kiro_api_base,
            "kiro_auth_base": self.kiro_auth_base,
            "kiro_oidc_base": self.kiro_oidc_base,
        }


def parse_dotenv(text: str) -> dict[str, str]:
    """Parse `KEY=value` lines; `#` comments, `export ` prefixes and simple quotes allowed."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if not value > 0:
        raise SettingsError(f"{name} must be greater than 0, got {env.get(name)!r}")
    return value


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if value < 1:
        raise SettingsError(f"{name} must be at least 1, got {env.get(name)!r}")
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE | _FALSE:
        return raw in _TRUE
    raise SettingsError(f"{name} must be on or off (true/false, 1/0), got {raw!r}")


def _client_version(env: Mapping[str, str]) -> str:
    raw = env.get("KIRO_CLIENT_VERSION", "").strip()
    if not raw:
        return "1.1.14"  # Kiro IDE build, docs/kiro-protocol.md §3.2 (kiro/endpoint.py)
    if not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}", raw):
        raise SettingsError(f"KIRO_CLIENT_VERSION must look like 1.1.14, not {raw!r}")
    return raw


def _check_keys(keys: tuple[str, ...]) -> None:
    """HTTP headers carry ASCII: a key with any other character could never be presented."""
    for n, key in enumerate(keys, 1):
        if not (key.isascii() and key.isprintable()):
            raise SettingsError(
                f"API_KEY: key #{n} contains a non-ASCII or control character; client keys "
                "travel in HTTP headers, so use printable ASCII only (e.g. letters, digits, -_)"
            )


def _hosts(raw: str) -> tuple[str, ...]:
    """KI2API_ALLOWED_HOSTS: comma-separated host names (a port, if given, is ignored)."""
    hosts = []
    for item in raw.split(","):
        host = item.strip().lower()
        if not host:
            continue
        if host.startswith("["):  # [::1]:8989 -> ::1
            host = host[1:].partition("]")[0]
        elif host.count(":") == 1:
            host = host.partition(":")[0]
        hosts.append(host)
    return tuple(hosts)


def _model_map(env: Mapping[str, str]) -> dict[str, str]:
    raw = env.get("KI2API_MODEL_MAP", "").strip()
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise SettingsError("KI2API_MODEL_MAP must be a JSON object of name -> Kiro id") from None
    if not isinstance(parsed, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()
    ):
        raise SettingsError("KI2API_MODEL_MAP must be a JSON object of name -> Kiro id")
    return parsed


def load_settings(
    environ: Mapping[str, str] | None = None, *, dotenv: Path | None = None
) -> Settings:
    """Build settings from `.env` (if present) overlaid with the environment."""
    base = dict(os.environ) if environ is None else dict(environ)
    env_file = dotenv if dotenv is not None else Path(base.get("KI2API_ENV_FILE", ".env"))
    env: dict[str, str] = {}
    if env_file.is_file():
        env.update(parse_dotenv(env_file.read_text(encoding="utf-8")))
    env.update(base)
    region = (env.get("KIRO_REGION") or "").strip() or None
    keys = tuple(k.strip() for k in env.get("API_KEY", DEFAULT_API_KEY).split(",") if k.strip())
    if not keys:
        raise SettingsError("API_KEY is empty; set at least one client key")
    _check_keys(keys)
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    creds = env.get("KIRO_CREDS_FILE")
    creds_dir = env.get("KIRO_CREDS_DIR")
    return Settings(
        api_keys=keys,
        host=env.get("HOST", "127.0.0.1"),
        port=_int(env, "PORT", DEFAULT_PORT),
        kiro_access_token=env.get("KIRO_ACCESS_TOKEN") or None,
        kiro_refresh_token=env.get("KIRO_REFRESH_TOKEN") or None,
        kiro_creds_file=Path(creds).expanduser() if creds else None,
        kiro_creds_dir=Path(creds_dir).expanduser() if creds_dir else None,
        kiro_profile_arn=env.get("KIRO_PROFILE_ARN") or None,
        kiro_region=region,
        kiro_api_base=(env.get("KIRO_API_BASE") or DEFAULT_API_BASE).rstrip("/"),
        kiro_auth_base=env.get(
            "KIRO_AUTH_BASE", f"https://prod.{region or 'us-east-1'}.auth.desktop.kiro.dev"
        ).rstrip("/"),
        kiro_oidc_base=(env.get("KIRO_OIDC_BASE") or "").rstrip("/") or None,
        home_dir=home,
        work_dir=Path.cwd(),
        data_dir=Path(env.get("KI2API_DATA_DIR", "data")),
        model_overrides=_model_map(env),
        model_fallback=_bool(env, "KI2API_MODEL_FALLBACK", True),
        max_body_bytes=_int(env, "KI2API_MAX_BODY_BYTES", 16 * 1024 * 1024),
        keepalive_interval_s=_float(env, "KI2API_KEEPALIVE_S", 15.0),
        first_event_timeout_s=_float(env, "KI2API_FIRST_EVENT_TIMEOUT_S", 120.0),
        read_timeout_s=_float(env, "KI2API_READ_TIMEOUT_S", 300.0),
        refresh_ahead_s=_float(env, "KI2API_REFRESH_AHEAD_S", 300.0),
        max_connections=_int(env, "KI2API_MAX_UPSTREAM_CONNECTIONS", 1024),
        header_timeout_s=_positive(env, "KI2API_HEADER_TIMEOUT_S", 10.0),
        body_timeout_s=_positive(env, "KI2API_BODY_TIMEOUT_S", 60.0),
        idle_timeout_s=_positive(env, "KI2API_IDLE_TIMEOUT_S", 30.0),
        max_client_connections=_count(env, "KI2API_MAX_CONNECTIONS", 1024),
        max_attempts=max(1, _int(env, "KI2API_MAX_ATTEMPTS", 4)),
        throttle_cooldown_s=_float(env, "KI2API_THROTTLE_COOLDOWN_S", 1.0),
        error_cooldown_s=_float(env, "KI2API_ERROR_COOLDOWN_S", 2.0),
        pool_wait_s=_float(env, "KI2API_POOL_WAIT_S", 5.0),
        quota_poll_s=_float(env, "KI2API_QUOTA_POLL_S", 1800.0),
        max_upstream_bytes=_int(env, "KI2API_MAX_UPSTREAM_BYTES", 600_000),
        max_image_bytes_per_request=_int(
            env, "KI2API_MAX_IMAGE_BYTES_PER_REQUEST", 5 * 1024 * 1024
        ),
        max_tools=_int(env, "KI2API_MAX_TOOLS", 119),
        trim_history=_bool(env, "KI2API_TRIM_HISTORY", False),
        kiro_client_version=_client_version(env),
        image_fetch=_bool(env, "KI2API_IMAGE_FETCH", True),
        image_max_bytes=_int(env, "KI2API_IMAGE_MAX_BYTES", 5 * 1024 * 1024),
        image_timeout_s=_float(env, "KI2API_IMAGE_TIMEOUT_S", 10.0),
        image_allow_private=_bool(env, "KI2API_IMAGE_ALLOW_PRIVATE", False),
        log_level=env.get("LOG_LEVEL", "info").lower(),
        workers=_int(env, "KI2API_WORKERS", 1),
        allow_default_key=_bool(env, "KI2API_ALLOW_DEFAULT_KEY", False),
        allowed_hosts=_hosts(env.get("KI2API_ALLOWED_HOSTS", "")),
    )
