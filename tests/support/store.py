"""The platform store for tests, on both backends.

    store_location    pytest fixture, parametrized: a SQLite file, and a fresh database on the
                      session's throwaway PostgreSQL cluster (tests.support.postgres)
    SyncStore         the async Store driven from synchronous test code on a loop of its own:
                      store.list_systems() runs Store.list_systems to completion; sql() runs
                      raw SQL in one write transaction (triggers, checks of the rows)

tests/conftest.py registers postgres_cluster (one cluster per session); a folder whose tests
use store_location imports it in its conftest.py
(``from tests.support.store import store_location  # noqa: F401``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from enclave.platform.store import Store
from tests.support.postgres import PostgresCluster, PostgresMissing, skip_requested

BACKENDS = ("sqlite", "postgresql")
_open: list[SyncStore] = []  # closed when the test that opened them ends


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """The session's PostgreSQL cluster (FAILS when the binaries are missing, unless
    ENCLAVE_TEST_POSTGRES=skip)."""
    try:
        cluster = PostgresCluster.start()
    except PostgresMissing as exc:
        if skip_requested():
            pytest.skip(str(exc))
        pytest.fail(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=BACKENDS)
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | Path]:
    """Where a new, empty store goes: a SQLite file, or a PostgreSQL database URL (every
    SyncStore the test leaves open is closed after it)."""
    if request.param == "sqlite":
        yield tmp_path / "p.db"
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        yield cluster.create_database()
    while _open:
        _open.pop().close()


class SyncStore:
    """A Store whose coroutine methods are run to completion (for synchronous tests)."""

    def __init__(self, location: str | Path, now: int | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self.store = self._loop.run_until_complete(Store.open(location, now))
        except BaseException:
            self._loop.close()
            raise
        self.dialect = self.store.db.dialect
        _open.append(self)

    def run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if inspect.iscoroutinefunction(attr):
            def call(*args: Any, **kwargs: Any) -> Any:
                return self._loop.run_until_complete(attr(*args, **kwargs))
            return call
        return attr

    def sql(self, statement: str, params: tuple[object, ...] = ()) -> list[dict[str, Any]]:
        """Raw SQL (``?`` placeholders) in its own write transaction; the rows it returns."""
        async def go() -> list[dict[str, Any]]:
            async with self.store.db.write() as tx:
                if statement.lstrip().upper().startswith(("SELECT", "PRAGMA")):
                    return await tx.fetchall(statement, params)
                await tx.execute(statement, params)
                return []

        return self._loop.run_until_complete(go())

    def fail_deletes(self, table: str, message: str) -> Callable[[], None]:
        """Make every DELETE on ``table`` fail with ``message`` (a trigger, per dialect); the
        function that removes the trigger again."""
        if self.dialect == "sqlite":
            self.sql(f"CREATE TRIGGER no_delete BEFORE DELETE ON {table} "
                     f"BEGIN SELECT RAISE(ABORT, '{message}'); END")
            return lambda: self.sql("DROP TRIGGER no_delete") and None
        self.sql("CREATE FUNCTION no_delete() RETURNS trigger LANGUAGE plpgsql AS "
                 f"$$ BEGIN RAISE EXCEPTION '{message}'; END $$")
        self.sql(f"CREATE TRIGGER no_delete BEFORE DELETE ON {table} "
                 "FOR EACH ROW EXECUTE FUNCTION no_delete()")
        return lambda: (self.sql(f"DROP TRIGGER no_delete ON {table}"),
                        self.sql("DROP FUNCTION no_delete()")) and None

    def close(self) -> None:
        if self._loop.is_closed():
            return
        if self in _open:
            _open.remove(self)
        try:
            self._loop.run_until_complete(self.store.close())
        finally:
            self._loop.close()
