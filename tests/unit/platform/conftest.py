"""The store tests run on both backends (tests.support.store)."""

from tests.support.store import postgres_cluster, store_location  # noqa: F401
