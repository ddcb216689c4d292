"""The PostgreSQL backend (``--db postgresql://...``): psycopg 3 with its async pool.

Every call is a coroutine on the event loop (libpq's non-blocking mode). Write transactions that
check and then insert take one transaction-level advisory lock (WRITE_LOCK), so writers are
serialised across every process and node on the database, as SQLite's write lock does for
a file; single-statement writes (``serialized=False``) skip it. Reads run as REPEATABLE READ,
READ ONLY: one consistent snapshot per read().

The SQL is the store's (``?`` placeholders, turned into ``%s`` here).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from enclave.platform.errors import StoreError
from enclave.platform.store.base import Database, Dialect, Params, Tx
from enclave.platform.store.records import Row

WRITE_LOCK = 0x656E636C  # pg_advisory_xact_lock key of the store's writers ("encl")
POOL_SIZE = 16  # connections per node (thousands of agents reconnecting at once)
CONNECT_TIMEOUT = 10  # seconds to wait for the first connection at open
_IN_TRANSACTION = (psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.INERROR)


def redacted(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


class _PgTx:
    dialect: Dialect = "postgresql"

    def __init__(self, conn: psycopg.AsyncConnection[Row], location: str) -> None:
        self._conn = conn
        self._location = location

    async def execute(self, sql: str, params: Params = ()) -> int:
        try:
            cur = await self._conn.execute(_pg(sql), tuple(params) or None)
        except psycopg.Error as exc:
            raise StoreError(f"platform database {self._location}: {exc}") from None
        return cur.rowcount

    async def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        try:
            async with self._conn.cursor() as cur:
                await cur.executemany(_pg(sql), [tuple(r) for r in rows])
        except psycopg.Error as exc:
            raise StoreError(f"platform database {self._location}: {exc}") from None

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        try:
            cur = await self._conn.execute(_pg(sql), tuple(params) or None)
            return await cur.fetchone()
        except psycopg.Error as exc:
            raise StoreError(f"platform database {self._location}: {exc}") from None

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        try:
            cur = await self._conn.execute(_pg(sql), tuple(params) or None)
            return await cur.fetchall()
        except psycopg.Error as exc:
            raise StoreError(f"platform database {self._location}: {exc}") from None


class PostgresDatabase(Database):
    dialect: Dialect = "postgresql"

    def __init__(self, url: str, pool: AsyncConnectionPool[psycopg.AsyncConnection[Row]]
                 ) -> None:
        self.url = url
        self.location = redacted(url)
        self._pool = pool

    @classmethod
    async def open(cls, url: str) -> PostgresDatabase:
        """Connect once (a clear error at once if the server cannot be reached), then the pool."""
        try:
            probe = await psycopg.AsyncConnection.connect(url, connect_timeout=CONNECT_TIMEOUT)
            await probe.close()
        except psycopg.Error as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StoreError(f"cannot open platform database {redacted(url)}: {reason}"
                             ) from None
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Row]] = AsyncConnectionPool(
            url, min_size=1, max_size=POOL_SIZE, open=False, name="enclave-platform",
            kwargs={"autocommit": True, "row_factory": dict_row},
            connection_class=psycopg.AsyncConnection[Row])
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except (psycopg.Error, Exception) as exc:  # PoolTimeout, bad conninfo
            await pool.close()
            raise StoreError(f"cannot open platform database {redacted(url)}: {exc}") from None
        return cls(url, pool)

    @contextlib.asynccontextmanager
    async def _transaction(self, begin: str, lock: bool = False) -> AsyncIterator[Tx]:
        """BEGIN with its isolation level in one statement (on the pool's autocommit
        connection: a round trip fewer than BEGIN and SET TRANSACTION), the writers' lock if
        ``lock``; COMMIT at the end, ROLLBACK on any exception (a connection given back to the
        pool still in a transaction, e.g. cancelled mid-statement, is rolled back or dropped
        by the pool)."""
        try:
            async with self._pool.connection() as conn:
                await conn.execute(begin)
                try:
                    if lock:
                        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                    yield _PgTx(conn, self.location)
                except BaseException:
                    if conn.info.transaction_status in _IN_TRANSACTION:
                        with contextlib.suppress(psycopg.Error):
                            await conn.execute("ROLLBACK")
                    raise
                await conn.execute("COMMIT")
        except psycopg.Error as exc:
            raise StoreError(f"platform database {self.location}: {exc}") from None

    def write(self, *, serialized: bool = True) -> contextlib.AbstractAsyncContextManager[Tx]:
        return self._transaction("BEGIN ISOLATION LEVEL READ COMMITTED", lock=serialized)

    def read(self) -> contextlib.AbstractAsyncContextManager[Tx]:
        return self._transaction("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        try:
            async with self._pool.connection() as conn:  # autocommit: one statement
                return await _PgTx(conn, self.location).fetchone(sql, params)
        except psycopg.Error as exc:
            raise StoreError(f"platform database {self.location}: {exc}") from None

    async def data_version(self) -> int:
        # the next transaction id the cluster will hand out: moves with every committed write
        async with self.read() as tx:
            row = await tx.fetchone("SELECT pg_snapshot_xmax(pg_current_snapshot())::text AS v")
        return 0 if row is None else int(row["v"])

    async def integrity_check(self) -> None:
        async with self.read() as tx:
            await tx.fetchone("SELECT 1 AS ok")

    async def close(self) -> None:
        await self._pool.close()
