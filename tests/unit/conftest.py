"""Fixtures of the unit tests: the state stores the contract tests run against, SQLite and Redis
(tests/support/stores.py)."""

from tests.support.stores import redis_server, store_factory

__all__ = ["redis_server", "store_factory"]
