"""The store tests run on both backends (tests.support.store; the session's PostgreSQL cluster
fixture is registered in tests/conftest.py)."""

from tests.support.store import store_location  # noqa: F401
