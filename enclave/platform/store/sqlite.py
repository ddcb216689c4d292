"""The SQLite backend: the embedded default (DATA/platform.db), in WAL mode.

Two connections, each on its own worker thread, so no SQLite call runs on the event loop:

    event loop --write()--> writer thread: the one write connection (BEGIN IMMEDIATE ... COMMIT;
                            an asyncio lock keeps one write transaction at a time in a process)
               --read()---> reader thread: a read connection (BEGIN ... ROLLBACK: one snapshot)

Other processes (the admin CLI) write to the same file; SQLite's lock serialises them, and a
writer waits at most BUSY_TIMEOUT for it, on its worker thread, never on the loop. A thread runs
its calls in order, so a transaction whose task is cancelled half-way is still ended there
before the next one begins.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from enclave.platform.errors import StoreError
from enclave.platform.store.base import Database, Dialect, Params, Tx
from enclave.platform.store.records import Row

BUSY_TIMEOUT = 2.0  # seconds a writer waits for another process's write lock (off the loop)
T = TypeVar("T")


class _Worker:
    """One thread with one connection; every call is handed to the thread."""

    def __init__(self, path: Path, name: str) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"enclave-sqlite-{name}")
        self._db: sqlite3.Connection | None = None
        self._path = path

    def _open(self) -> None:
        db = sqlite3.connect(str(self._path), isolation_level=None, timeout=BUSY_TIMEOUT,
                             check_same_thread=False)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            db.close()
            raise
        self._db = db

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            if self._db is None:
                try:
                    self._open()
                except sqlite3.Error as exc:
                    raise StoreError(f"cannot open platform database {self._path}: {exc}"
                                     ) from None
            assert self._db is not None
            try:
                return fn(self._db)
            except sqlite3.Error as exc:
                raise StoreError(f"platform database {self._path}: {exc}") from None

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    async def close(self) -> None:
        def shut() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        with contextlib.suppress(RuntimeError):  # the loop is closing: the thread ends anyway
            await asyncio.get_running_loop().run_in_executor(self._pool, shut)
        self._pool.shutdown(wait=True)


class _SqliteTx:
    dialect: Dialect = "sqlite"

    def __init__(self, worker: _Worker) -> None:
        self._worker = worker

    async def execute(self, sql: str, params: Params = ()) -> int:
        return await self._worker.call(lambda db: db.execute(sql, tuple(params)).rowcount)

    async def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        await self._worker.call(lambda db: db.executemany(sql, [tuple(r) for r in rows]))

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        def one(db: sqlite3.Connection) -> Row | None:
            row = db.execute(sql, tuple(params)).fetchone()
            return None if row is None else dict(row)

        return await self._worker.call(one)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return await self._worker.call(
            lambda db: [dict(r) for r in db.execute(sql, tuple(params)).fetchall()])


def _end(db: sqlite3.Connection) -> None:
    """End the connection's transaction, if one is open, without keeping anything."""
    if db.in_transaction:
        db.execute("ROLLBACK")


class SqliteDatabase(Database):
    dialect: Dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)
        self._writer = _Worker(path, "write")
        self._reader = _Worker(path, "read")
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def write(self, *, serialized: bool = True) -> AsyncIterator[Tx]:
        async with self._write_lock:
            try:
                await self._writer.call(lambda db: db.execute("BEGIN IMMEDIATE"))
                yield _SqliteTx(self._writer)
                await self._writer.call(lambda db: db.execute("COMMIT"))
            except BaseException:  # also a cancelled task: the thread runs the calls in order
                with contextlib.suppress(StoreError):
                    await asyncio.shield(self._writer.call(_end))
                raise

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        async with self._read_lock:
            try:
                await self._reader.call(lambda db: db.execute("BEGIN"))
                yield _SqliteTx(self._reader)
            finally:
                with contextlib.suppress(StoreError):
                    await asyncio.shield(self._reader.call(_end))

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        async with self._read_lock:
            return await _SqliteTx(self._reader).fetchone(sql, params)

    async def data_version(self) -> int:
        async with self._read_lock:
            return await self._reader.call(
                lambda db: int(db.execute("PRAGMA data_version").fetchone()[0]))

    async def integrity_check(self) -> None:
        try:
            result = await self._reader.call(
                lambda db: str(db.execute("PRAGMA quick_check").fetchone()[0]))
        except StoreError as exc:
            raise StoreError(f"platform database {self.path} is corrupt: {exc}") from None
        if result != "ok":
            raise StoreError(f"platform database {self.path} is corrupt: {result}")

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()
