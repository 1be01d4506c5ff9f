"""Which store KI2API_STORE names (state/open_store.py, state/redis_base.py): table-driven, and
no Redis password in anything shown; the store one opens answers (SQLite and Redis alike)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ki2api.settings import SettingsError, load_settings
from ki2api.state.base import AccountRecord
from ki2api.state.open_store import open_spec, parse_store, store_spec
from ki2api.state.redis_base import parse_redis_url
from tests.support.stores import StoreFactory

DATA = Path("/srv/data")
PASSWORD = "pa55-w0rd-secret"


@pytest.mark.parametrize(
    ("text", "kind", "shown"),
    [
        (None, "sqlite", "/srv/data/ki2api.sqlite3"),
        ("", "sqlite", "/srv/data/ki2api.sqlite3"),
        ("sqlite:/tmp/x.db", "sqlite", "/tmp/x.db"),
        ("sqlite:rel/x.db", "sqlite", "rel/x.db"),
        ("redis://cache", "redis", "redis://cache:6379/0 (prefix 'ki2api:')"),
        (f"redis://:{PASSWORD}@cache:7000/3", "redis", "redis://cache:7000/3 (prefix 'ki2api:')"),
        (
            f"rediss://me:{PASSWORD}@cache/2?prefix=team-a:",
            "redis",
            "rediss://cache:6379/2 (prefix 'team-a:')",
        ),
        ("redis://[::1]:6380", "redis", "redis://[::1]:6380/0 (prefix 'ki2api:')"),
    ],
)
def test_store_specs(text: str | None, kind: str, shown: str) -> None:
    spec = parse_store(text, DATA)
    assert (spec.kind, spec.shown) == (kind, shown)
    assert PASSWORD not in repr(spec)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sqlite:", "needs a path"),
        ("mysql://x", "sqlite:PATH, redis://"),
        ("redis://", "redis://host"),
        (f"redis://:{PASSWORD}@cache/zero", "must be a number"),
        (f"redis://:{PASSWORD}@cache:port/0", "malformed"),
    ],
)
def test_bad_store_specs(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_store(text, DATA)
    assert PASSWORD not in str(caught.value)


def test_the_url_keeps_the_password_and_drops_the_prefix() -> None:
    where = parse_redis_url(f"rediss://me:{PASSWORD}@cache:7000/4?prefix=p:&ssl_cert_reqs=none")
    assert where.url == f"rediss://me:{PASSWORD}@cache:7000/4?ssl_cert_reqs=none"
    assert where.prefix == "p:"
    assert PASSWORD not in repr(where)


def test_the_setting(tmp_path: Path) -> None:
    env = {"KI2API_ENV_FILE": str(tmp_path / "none"), "KI2API_DATA_DIR": str(tmp_path)}
    assert store_spec(load_settings(env)).path == tmp_path / "ki2api.sqlite3"
    settings = load_settings({**env, "KI2API_STORE": f"redis://:{PASSWORD}@h/1"})
    assert store_spec(settings).kind == "redis"
    assert PASSWORD not in repr(settings)
    with pytest.raises(SettingsError, match="KI2API_STORE") as caught:
        load_settings({**env, "KI2API_STORE": f"memcache://:{PASSWORD}@h"})
    assert PASSWORD not in str(caught.value)


async def test_the_store_opened_answers(store_factory: StoreFactory, tmp_path: Path) -> None:
    text = store_factory.redis_url or f"sqlite:{store_factory.sqlite_path}"
    store = open_spec(parse_store(text, tmp_path))
    try:
        await store.upsert_account(AccountRecord("a", "store", "a", "social", "0" * 64))
        assert [a.id for a in await store_factory().list_accounts()] == ["a"]
        assert PASSWORD not in repr(store)
    finally:
        await store.aclose()
