"""Configuration: the only module that reads the environment (and only when called).

Sources, lowest to highest precedence: defaults, a `.env` file in the working directory,
the process environment, CLI flags (applied by `cli/main.py` with `dataclasses.replace`).

Each setting is declared once, as a row of the `Settings` class: its field, the variable it is
read from, the parser that reads it, its default and a one-line help (`setting(...)`).
`load_settings` reads every row that names a variable; `settings_table()` lists them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeAlias, TypeVar

__all__ = [
    "Settings",
    "SettingsError",
    "arena_max_from_env",
    "SettingSpec",
    "load_settings",
    "parse_dotenv",
    "settings_table",
]

DEFAULT_API_KEY = "ki2api-key-2024"
DEFAULT_PORT = 8989
# The Q API host of each account's region (us-east-1 or eu-central-1: see kiro/endpoint.py).
DEFAULT_API_BASE = "https://q.{region}.amazonaws.com"
# The Kiro auth host; KIRO_REGION (when set) picks its region, us-east-1 otherwise.
_AUTH_BASE = "https://prod.{region}.auth.desktop.kiro.dev"

T = TypeVar("T")
# A parser reads the variable `name` from the merged environment; `default()` when unset.
Parser: TypeAlias = Callable[[Mapping[str, str], str, Callable[[], T]], T]
Strs: TypeAlias = tuple[str, ...]


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


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


# --- parsers: (env, name, default) -> value; errors name the variable ----------------------------


def _text(env: Mapping[str, str], name: str, default: Callable[[], str]) -> str:
    """The value as given (an empty value stays empty)."""
    raw = env.get(name)
    return default() if raw is None else raw


def _lower(env: Mapping[str, str], name: str, default: Callable[[], str]) -> str:
    return _text(env, name, default).lower()


def _optional(env: Mapping[str, str], name: str, default: Callable[[], str | None]) -> str | None:
    """The value, or the default (None) when unset or empty."""
    return env.get(name) or default()


def _region(env: Mapping[str, str], name: str, default: Callable[[], str | None]) -> str | None:
    return (env.get(name) or "").strip() or default()


def _url(env: Mapping[str, str], name: str, default: Callable[[], str]) -> str:
    """A base URL without its trailing slash; the default when unset or empty."""
    return (env.get(name) or default()).rstrip("/")


def _optional_url(
    env: Mapping[str, str], name: str, default: Callable[[], str | None]
) -> str | None:
    return (env.get(name) or "").rstrip("/") or default()


def _auth_url(env: Mapping[str, str], name: str, default: Callable[[], str]) -> str:
    """The auth host: as given, else in KIRO_REGION's region, else the default (us-east-1)."""
    raw = env.get(name)
    if raw is None:
        region = _region(env, "KIRO_REGION", lambda: None)
        raw = _AUTH_BASE.format(region=region) if region else default()
    return raw.rstrip("/")


def _store(env: Mapping[str, str], name: str, default: Callable[[], str | None]) -> str | None:
    raw = (env.get(name) or "").strip()  # never echoed: a Redis URL may hold a password
    if raw and not raw.startswith(("sqlite:", "redis://", "rediss://")):
        raise SettingsError(f"{name} must be sqlite:PATH, redis://… or rediss://…")
    return raw or default()


def _path(env: Mapping[str, str], name: str, default: Callable[[], Path]) -> Path:
    """A path as given (an empty value is the working directory)."""
    raw = env.get(name)
    return default() if raw is None else Path(raw)


def _dir(env: Mapping[str, str], name: str, default: Callable[[], Path]) -> Path:
    """A path; the default when unset or empty."""
    raw = env.get(name)
    return Path(raw) if raw else default()


def _user_path(
    env: Mapping[str, str], name: str, default: Callable[[], Path | None]
) -> Path | None:
    """A path with `~` expanded; the default when unset or empty."""
    raw = env.get(name)
    return Path(raw).expanduser() if raw else default()


def _int(env: Mapping[str, str], name: str, default: Callable[[], int]) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default()
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: Callable[[], float]) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default()
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


def _positive(env: Mapping[str, str], name: str, default: Callable[[], float]) -> float:
    value = _float(env, name, default)
    if not value > 0:
        raise SettingsError(f"{name} must be greater than 0, got {env.get(name)!r}")
    return value


def _count(env: Mapping[str, str], name: str, default: Callable[[], int]) -> int:
    value = _int(env, name, default)
    if value < 1:
        raise SettingsError(f"{name} must be at least 1, got {env.get(name)!r}")
    return value


def _at_least_one(env: Mapping[str, str], name: str, default: Callable[[], int]) -> int:
    """A whole number; below 1 counts as 1."""
    return max(1, _int(env, name, default))


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(env: Mapping[str, str], name: str, default: Callable[[], bool]) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default()
    if raw in _TRUE | _FALSE:
        return raw in _TRUE
    raise SettingsError(f"{name} must be on or off (true/false, 1/0), got {raw!r}")


def _client_version(env: Mapping[str, str], name: str, default: Callable[[], str]) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default()
    if not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}", raw):
        raise SettingsError(f"{name} must look like 1.1.14, not {raw!r}")
    return raw


def _keys(
    env: Mapping[str, str], name: str, default: Callable[[], tuple[str, ...]]
) -> tuple[str, ...]:
    """Comma-separated client keys. HTTP headers carry ASCII: a key with any other character
    could never be presented."""
    raw = env.get(name)
    text = ",".join(default()) if raw is None else raw
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    if not keys:
        raise SettingsError(f"{name} is empty; set at least one client key")
    for n, key in enumerate(keys, 1):
        if not (key.isascii() and key.isprintable()):
            raise SettingsError(
                f"{name}: key #{n} contains a non-ASCII or control character; client keys "
                "travel in HTTP headers, so use printable ASCII only (e.g. letters, digits, -_)"
            )
    return keys


def _hosts(
    env: Mapping[str, str], name: str, default: Callable[[], tuple[str, ...]]
) -> tuple[str, ...]:
    """Comma-separated host names (a port, if given, is ignored)."""
    raw = env.get(name)
    if raw is None:
        return default()
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


def _proxies(env: Mapping[str, str], name: str, default: Callable[[], Strs]) -> Strs:
    """Comma-separated proxy URLs, each checked (core/proxy.py); never echoed (a password)."""
    from ki2api.core.proxy import ProxyURLError, parse_proxy

    urls = tuple(u.strip() for u in env.get(name, ",".join(default())).split(",") if u.strip())
    for n, url in enumerate(urls, 1):
        try:
            parse_proxy(url)
        except ProxyURLError as exc:
            raise SettingsError(f"{name}: proxy #{n}: {exc}") from None
    return urls


def _model_map(
    env: Mapping[str, str], name: str, default: Callable[[], Mapping[str, str]]
) -> Mapping[str, str]:
    raw = env.get(name, "").strip()
    if not raw:
        return default()
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a JSON object of name -> Kiro id") from None
    if not isinstance(parsed, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()
    ):
        raise SettingsError(f"{name} must be a JSON object of name -> Kiro id")
    return parsed


# --- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SettingSpec(Generic[T]):
    """One row of the table: where a field comes from. `env` None: not read from the
    environment (the field keeps its default)."""

    env: str | None
    parse: Parser[T] | None
    help: str

    def __post_init__(self) -> None:
        if (self.env is None) != (self.parse is None):
            raise TypeError("a setting read from the environment needs both a name and a parser")


_SPEC = "ki2api.setting"


def setting(
    env: str | None, parse: Parser[T] | None, default: T, help: str, *, secret: bool = False
) -> T:
    """A field of `Settings` with its default; `secret` keeps it out of repr()."""
    spec = SettingSpec(env, parse, help)
    return field(default=default, repr=not secret, metadata={_SPEC: spec})


def setting_made(env: str | None, parse: Parser[T] | None, make: Callable[[], T], help: str) -> T:
    """A field of `Settings` whose default `make()` computes when the settings are built."""
    return field(default_factory=make, metadata={_SPEC: SettingSpec(env, parse, help)})


@dataclass(frozen=True)
class Settings:
    # fmt: off
    api_keys: tuple[str, ...] = setting(
        "API_KEY", _keys, (DEFAULT_API_KEY,), "client keys, comma-separated", secret=True)
    host: str = setting("HOST", _text, "127.0.0.1", "address to listen on")
    port: int = setting("PORT", _int, DEFAULT_PORT, "port to listen on")
    # Kiro login
    kiro_access_token: str | None = setting(
        "KIRO_ACCESS_TOKEN", _optional, None, "a Kiro access token", secret=True)
    kiro_refresh_token: str | None = setting(
        "KIRO_REFRESH_TOKEN", _optional, None, "a Kiro refresh token", secret=True)
    kiro_api_key: str | None = setting(
        "KIRO_API_KEY", _optional, None, "a Kiro API key (ksk_…): one pool account", secret=True)
    kiro_api_region: str = setting(
        "KIRO_API_REGION", _text, "us-east-1", "the Q region of KIRO_API_KEY")
    kiro_creds_file: Path | None = setting(
        "KIRO_CREDS_FILE", _user_path, None, "a Kiro token file")
    kiro_creds_dir: Path | None = setting(
        "KIRO_CREDS_DIR", _user_path, None, "a directory of token files: one pool account each")
    kiro_profile_arn: str | None = setting(
        "KIRO_PROFILE_ARN", _optional, None, "the Kiro profile ARN")
    kiro_region: str | None = setting(
        "KIRO_REGION", _region, None, "one Q region for every account (override)")
    # Upstream hosts (point all three at the emulator for a demo)
    kiro_api_base: str = setting(
        "KIRO_API_BASE", _url, DEFAULT_API_BASE, "Q API host; `{region}`: the account's region")
    kiro_auth_base: str = setting(
        "KIRO_AUTH_BASE", _auth_url, _AUTH_BASE.format(region="us-east-1"),
        "Kiro auth host (in KIRO_REGION's region when that is set)")
    kiro_oidc_base: str | None = setting(
        "KIRO_OIDC_BASE", _optional_url, None,
        "OIDC host (default: https://oidc.{token file region}.amazonaws.com)")
    # Where to look for token files (tests point these at temp dirs)
    home_dir: Path = setting_made("HOME", _dir, Path.home, "home directory searched for tokens")
    work_dir: Path = setting_made(None, None, Path.cwd, "working directory searched for tokens")
    data_dir: Path = setting(
        "KI2API_DATA_DIR", _path, Path("data"), "state store and token files of ours")
    store: str | None = setting(  # state/open_store.py
        "KI2API_STORE", _store, None,
        "state store: sqlite:PATH, redis[s]://…; empty: SQLite in the data dir", secret=True)
    # Behaviour
    model_overrides: Mapping[str, str] = setting_made(
        "KI2API_MODEL_MAP", _model_map, dict, "JSON object: model name -> Kiro model id")
    model_fallback: bool = setting(
        "KI2API_MODEL_FALLBACK", _bool, True,
        "unknown Claude names -> the closest Kiro model of the family")
    max_body_bytes: int = setting(
        "KI2API_MAX_BODY_BYTES", _int, 16 * 1024 * 1024, "largest client request body")
    keepalive_interval_s: float = setting(
        "KI2API_KEEPALIVE_S", _float, 15.0, "keep-alive interval of a quiet stream")
    first_event_timeout_s: float = setting(
        "KI2API_FIRST_EVENT_TIMEOUT_S", _float, 120.0, "wait for Kiro's first event")
    read_timeout_s: float = setting(
        "KI2API_READ_TIMEOUT_S", _float, 300.0, "silence allowed between Kiro's events")
    connect_timeout_s: float = setting(None, None, 10.0, "connecting to Kiro")
    refresh_ahead_s: float = setting(
        "KI2API_REFRESH_AHEAD_S", _float, 300.0, "refresh a token this long before it expires")
    max_connections: int = setting(
        "KI2API_MAX_UPSTREAM_CONNECTIONS", _int, 1024, "upstream (Kiro) connection pool")
    # Client connections (server/connections.py): read deadlines and a cap
    header_timeout_s: float = setting(
        "KI2API_HEADER_TIMEOUT_S", _positive, 10.0, "the whole request head, from its first byte")
    body_timeout_s: float = setting(
        "KI2API_BODY_TIMEOUT_S", _positive, 60.0, "the body, plus 1 s per 64 KiB it declares")
    idle_timeout_s: float = setting(
        "KI2API_IDLE_TIMEOUT_S", _positive, 30.0,
        "silence after accept or between keep-alive requests")
    max_client_connections: int = setting(
        "KI2API_MAX_CONNECTIONS", _count, 1024, "open client connections (below the fd limit)")
    # Account pool (kiro/accounts/policy.py)
    max_attempts: int = setting(
        "KI2API_MAX_ATTEMPTS", _at_least_one, 4, "accounts tried for one request before giving up")
    throttle_cooldown_s: float = setting(
        "KI2API_THROTTLE_COOLDOWN_S", _float, 1.0,
        "rest after a 2nd 429 in a row (doubling, max 300 s)")
    error_cooldown_s: float = setting(
        "KI2API_ERROR_COOLDOWN_S", _float, 2.0, "first rest after a 5xx / network error (max 60 s)")
    pool_wait_s: float = setting(
        "KI2API_POOL_WAIT_S", _float, 5.0, "longest wait of a request for a resting account")
    quota_poll_s: float = setting(
        "KI2API_QUOTA_POLL_S", _float, 1800.0, "how often to ask getUsageLimits (0: never)")
    # Per-account cap, pace and the wait queue (kiro/accounts/slots.py); `accounts set` overrides
    account_max_inflight: int = setting(
        "KI2API_ACCOUNT_MAX_INFLIGHT", _int, 4, "requests in flight per account (0: no cap)")
    account_pace_rpm: float = setting(
        "KI2API_ACCOUNT_PACE_RPM", _float, 0.0, "request starts a minute per account (0: no pace)")
    queue_wait_s: float = setting(
        "KI2API_QUEUE_WAIT_S", _float, 30.0, "longest wait for a free slot, then 429")
    queue_max: int = setting(
        "KI2API_QUEUE_MAX", _int, 500, "requests waiting for a slot at most, per worker")
    # Outbound proxies (kiro/accounts/proxies.py); an account's own (`accounts set --proxy`) wins
    proxies: tuple[str, ...] = setting(
        "KI2API_PROXY", _proxies, (), "proxy URL(s), comma-separated, of accounts without one")
    max_accounts_per_proxy: int = setting(
        "KI2API_MAX_ACCOUNTS_PER_PROXY", _int, 3, "accounts per network path (0: no limit)")
    proxy_ca_file: Path | None = setting(  # http_client.proxy_tls: TLS to https:// proxies only
        "KI2API_PROXY_CA_FILE", _user_path, None, "PEM CA(s) also trusted for https:// proxies")
    # Upstream size budget (kiro/request/budget.py)
    max_upstream_bytes: int = setting(
        "KI2API_MAX_UPSTREAM_BYTES", _int, 600_000, "the text of the body (images do not count)")
    max_image_bytes_per_request: int = setting(
        "KI2API_MAX_IMAGE_BYTES_PER_REQUEST", _int, 5 * 1024 * 1024,
        "images of one request, base64")
    max_tools: int = setting(  # Kiro refuses about 120 tools and more (docs/kiro-protocol.md §3.6)
        "KI2API_MAX_TOOLS", _int, 119, "tools sent to Kiro at most")
    trim_history: bool = setting(
        "KI2API_TRIM_HISTORY", _bool, False, "drop the oldest turns of a body over the budget")
    kiro_client_version: str = setting(  # Kiro IDE build, docs/kiro-protocol.md §3.2
        "KIRO_CLIENT_VERSION", _client_version, "1.1.14",
        "client version in the user agent headers (kiro/endpoint.py): keep it current")
    client_identity_file: Path | None = setting(  # kiro/client_identity.py (checked at start)
        "KI2API_CLIENT_IDENTITY", _user_path, None, "JSON file: the client versions sent")
    # Trouble signs (kiro/accounts/trouble.py, docs/accounts.md "Trouble signs")
    suspicious_rest_s: float = setting(
        "KI2API_SUSPICIOUS_REST_S", _float, 1800.0, "rest after a 429 about suspicious activity")
    credit_window_s: float = setting(
        "KI2API_CREDIT_WINDOW_S", _float, 300.0, "5-minute credit limit: rest w/o Retry-After")
    user_rate_rest_s: float = setting(
        "KI2API_USER_RATE_REST_S", _float, 60.0, "per-user rate limit: rest w/o Retry-After")
    location_rest_s: float = setting(
        "KI2API_LOCATION_REST_S", _float, 1800.0, "no Claude model to a location-blocked account")
    # Remote images (images/fetch.py)
    image_fetch: bool = setting("KI2API_IMAGE_FETCH", _bool, True, "fetch images given by URL")
    image_max_bytes: int = setting(
        "KI2API_IMAGE_MAX_BYTES", _int, 5 * 1024 * 1024, "largest image fetched")
    image_timeout_s: float = setting(
        "KI2API_IMAGE_TIMEOUT_S", _float, 10.0, "time allowed to fetch one image")
    image_allow_private: bool = setting(
        "KI2API_IMAGE_ALLOW_PRIVATE", _bool, False, "fetch images from private addresses")
    # Stored responses (server/routes_responses.py): `previous_response_id`, GET, DELETE
    responses_ttl_s: float = setting(
        "KI2API_RESPONSES_TTL_S", _float, 30 * 86400.0,
        "how long a stored Responses API answer is kept (0: none is stored)")
    log_level: str = setting("LOG_LEVEL", _lower, "info", "debug, info, warning or error")
    log_format: str = setting("LOG_FORMAT", _lower, "text", "text, or json: a JSON object a line")
    admin_key: str | None = setting(  # /metrics, the console (server/console/)
        "ADMIN_KEY", _optional, None, "the operator's key (/metrics, the /ui console)", secret=True)
    display: str | None = setting(  # `ki2api demo` opens the console in a browser only with one
        "DISPLAY", _optional, None, "the X display (a desktop session)")
    metrics_token: str | None = setting(
        "KI2API_METRICS_TOKEN", _optional, None, "a token that reads /metrics only", secret=True)
    metrics_dir: Path | None = setting(  # prometheus-client's multiprocess mode
        "PROMETHEUS_MULTIPROC_DIR", _user_path, None, "set by `serve --workers N` for its workers")
    workers: int = setting("KI2API_WORKERS", _int, 1, "`serve` processes sharing the state store")
    # Network safety (cli/runner.py, server/hosts.py)
    allow_default_key: bool = setting(
        "KI2API_ALLOW_DEFAULT_KEY", _bool, False,
        "serve on a non-loopback address with DEFAULT_API_KEY")
    allowed_hosts: tuple[str, ...] = setting(
        "KI2API_ALLOWED_HOSTS", _hosts, (),
        "extra Host names accepted on a loopback bind (\"*\": any)")
    # fmt: on

    def redacted(self) -> dict[str, object]:
        """Settings safe to print: secrets replaced by whether they are set."""
        return {
            "api_keys": f"{len(self.api_keys)} key(s)",
            "host": self.host,
            "port": self.port,
            "kiro_access_token": "set" if self.kiro_access_token else "unset",
            "kiro_refresh_token": "set" if self.kiro_refresh_token else "unset",
            "kiro_api_key": "set" if self.kiro_api_key else "unset",
            "kiro_creds_file": str(self.kiro_creds_file) if self.kiro_creds_file else None,
            "kiro_creds_dir": str(self.kiro_creds_dir) if self.kiro_creds_dir else None,
            "kiro_api_base": self.kiro_api_base,
            "kiro_auth_base": self.kiro_auth_base,
            "kiro_oidc_base": self.kiro_oidc_base,
        }


def settings_table() -> list[tuple[str, SettingSpec[object]]]:
    """(field name, its row) for every field of `Settings`, in declaration order."""
    return [(f.name, f.metadata[_SPEC]) for f in dataclasses.fields(Settings)]


def _default(f: dataclasses.Field[Any]) -> Callable[[], Any]:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory
    value = f.default
    return lambda: value


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
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        spec: SettingSpec[Any] = f.metadata[_SPEC]
        if spec.env is not None and spec.parse is not None:
            values[f.name] = spec.parse(env, spec.env, _default(f))
    return Settings(**values)


def arena_max_from_env() -> bool:
    """Whether glibc's own MALLOC_ARENA_MAX is set (it wins: server/allocator.py)."""
    return "MALLOC_ARENA_MAX" in os.environ
