"""The platform tests use the session's throwaway PostgreSQL cluster (tests.support.store)."""

from tests.support.store import postgres_cluster  # noqa: F401
