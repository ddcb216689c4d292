"""The storage interface: what a database backend gives the platform store.

    Store (operations.py)  --  one implementation of every operation, in SQL written once
      |  async with db.write() as tx / db.read() as tx: await tx.execute / fetchone / fetchall
      v
    Database               --  SqliteDatabase (sqlite.py): the file in --data, worker threads
                               PostgresDatabase (postgres.py): psycopg 3 with its async pool

SQL uses ``?`` placeholders (the PostgreSQL backend turns them into ``%s``). Where the dialects
differ, the statement asks ``tx.dialect``. A write transaction is all-or-nothing and writers are
serialised (SQLite: its one write lock; PostgreSQL: a transaction-level advisory lock), so a
check-then-insert inside one (the N-use limit of a key, name and address allocation) holds on
both. No call blocks the event loop: SQLite runs on its own threads, PostgreSQL is async.
Backend errors surface as StoreError.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Literal, Protocol

from enclave.platform.store.records import Row

Dialect = Literal["sqlite", "postgresql"]
Params = Sequence[object]


class Tx(Protocol):
    """One open transaction (or read snapshot)."""

    dialect: Dialect

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Params]) -> None: ...

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None: ...

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...


class Database(ABC):
    """A backend: transactions, a change counter, and a health check."""

    dialect: Dialect
    location: str  # for messages: the file, or the URL without its password

    @abstractmethod
    def write(self, *, serialized: bool = True) -> AbstractAsyncContextManager[Tx]:
        """A write transaction (committed at the end, rolled back on any exception).
        ``serialized=False``: the statements are safe without the writers' lock (a single
        upsert or delete), so PostgreSQL need not take it."""

    @abstractmethod
    def read(self) -> AbstractAsyncContextManager[Tx]:
        """A read-only transaction that sees one consistent state."""

    @abstractmethod
    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        """One statement outside an explicit transaction (a statement sees one consistent
        state on its own): one round trip, where a read() costs a BEGIN and COMMIT more."""

    @abstractmethod
    async def data_version(self) -> int:
        """A number that changes when any connection (this process or another) commits."""

    @abstractmethod
    async def integrity_check(self) -> None:
        """StoreError if the database is unusable (corrupt file, server unreachable)."""

    @abstractmethod
    async def close(self) -> None: ...
