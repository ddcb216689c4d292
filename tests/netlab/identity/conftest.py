"""The identity tests' platform: one real `enclave platform serve` on loopback per module
(``platform_each_store``: one per store backend, SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.platform import Platform
from tests.support.postgres import PostgresCluster
from tests.support.store import BACKENDS


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with Platform.loopback(tmp_path_factory.mktemp("plat")) as p:
        yield p


@pytest.fixture(scope="module", params=BACKENDS)
def platform_each_store(request: pytest.FixtureRequest,
                        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    db = None
    if request.param == "postgresql":
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        db = cluster.create_database()
    with Platform.loopback(tmp_path_factory.mktemp(f"plat-{request.param}"), db=db) as p:
        yield p
