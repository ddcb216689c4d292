"""A throwaway PostgreSQL cluster for the test session (real server binaries, no mocks): the
product's enclave.platform.pgcluster (also what `enclave bench platform` starts).

When the binaries are missing the PostgreSQL-backed tests FAIL, unless ENCLAVE_TEST_POSTGRES=skip
says to skip them (CI installs the package, so it never skips).
"""

from __future__ import annotations

import os

from enclave.platform.pgcluster import (
    PREFIX,
    USER,
    PostgresCluster,
    PostgresMissing,
    find_bindir,
    remove_leftovers,
)

SKIP_ENV = "ENCLAVE_TEST_POSTGRES"  # "skip": skip the PostgreSQL-backed tests when absent

__all__ = ["PREFIX", "SKIP_ENV", "USER", "PostgresCluster", "PostgresMissing", "find_bindir",
           "remove_leftovers", "skip_requested"]


def skip_requested() -> bool:
    return os.environ.get(SKIP_ENV, "").strip().lower() == "skip"
