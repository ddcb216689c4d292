"""The async store on both backends: concurrent writers keep the N-use limit, the event loop
keeps running while another process holds the write lock, last-seen times are batched, and the
hub's snapshot is one consistent read."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg

from enclave.platform.errors import ApiError, StoreError
from enclave.platform.store import IssuedCert, Store, System
from enclave.platform.store.postgres import WRITE_LOCK

OVERLAY = ipaddress.IPv4Network("100.64.0.0/10")
_serials = itertools.count(5000)


def issue(system: System) -> IssuedCert:
    return IssuedCert(serial=next(_serials), der=b"der-" + system.name.encode(), not_before=0,
                      not_after=10**10)


async def _key(store: Store, uses: int | None) -> str:
    key = await store.create_key(secret=b"k" * 32, now=0, expires_at=None, uses_allowed=uses,
                                 tags=(), approval="auto", ephemeral=False, cert_lifetime=3600)
    return key.id


async def _enrol(store: Store, key_id: str, n: int) -> System:
    system, _cert = await store.enrol(key_id=key_id, secret=b"k" * 32,
                                      public_key=n.to_bytes(32, "big"), hostname=f"h{n}",
                                      overlay=OVERLAY, now=1, issue=issue)
    return system


@contextlib.contextmanager
def write_lock_held_elsewhere(location: str | Path) -> Iterator[None]:
    """Another process's writer: SQLite's write lock on the file, or the store's PostgreSQL
    writers' advisory lock, held by a connection of its own until the block ends."""
    if isinstance(location, Path):
        other = sqlite3.connect(location, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
            other.close()
    else:
        with psycopg.connect(location, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (WRITE_LOCK,))


def test_concurrent_enrolments_keep_the_use_limit(store_location: str | Path) -> None:
    async def main() -> None:
        store = await Store.open(store_location)
        try:
            key_id = await _key(store, uses=3)
            results = await asyncio.gather(*(_enrol(store, key_id, n) for n in range(10)),
                                           return_exceptions=True)
            enrolled = [r for r in results if isinstance(r, System)]
            refused = [r for r in results if isinstance(r, ApiError)]
            assert len(enrolled) == 3 and len(refused) == 7
            assert {e.message for e in refused} == {"enrolment key has been used up"}
            assert len({s.overlay_ip for s in enrolled}) == 3
            key = await store.get_key(key_id)
            assert key is not None and key.uses == 3
            assert len(await store.list_systems()) == 3
        finally:
            await store.close()

    asyncio.run(main())


def test_loop_runs_while_another_process_holds_the_write_lock(
        store_location: str | Path) -> None:
    """A write waits for the other writer off the event loop: other coroutines keep running,
    and reads go on. (The old store waited on the loop itself, up to 10 s.)"""
    async def main() -> None:
        store = await Store.open(store_location)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        beat = asyncio.get_running_loop().create_task(ticker())
        try:
            with write_lock_held_elsewhere(store_location):
                write = asyncio.get_running_loop().create_task(store.set_meta({"k": "v"}))
                while ticks < 20:  # the loop keeps turning while the write waits
                    await asyncio.sleep(0.01)
                assert not write.done()
                assert await store.get_meta("k") is None  # reads are not held up
            try:
                await write
            except StoreError as exc:  # SQLite: its busy timeout ran out while we held it
                assert "locked" in str(exc)
                await store.set_meta({"k": "v"})
            assert await store.get_meta("k") == "v"
        finally:
            beat.cancel()
            await store.close()

    asyncio.run(main())


def test_last_seen_is_batched_and_never_moves_back(store_location: str | Path) -> None:
    async def main() -> None:
        store = await Store.open(store_location)
        try:
            a = await _enrol(store, await _key(store, None), 1)
            assert a.last_seen == 1
            store.note_seen(a.name, 50)
            store.note_seen(a.name, 40)  # older: ignored
            store.note_seen("nosuch", 60)  # a name with no row: harmless
            assert (await store.get_system(a.name)).last_seen == 1  # nothing written yet
            assert await store.flush_seen() == 2
            assert (await store.get_system(a.name)).last_seen == 50
            assert await store.flush_seen() == 0
            store.note_seen(a.name, 30)  # an older time from another node: never moves back
            await store.flush_seen()
            assert (await store.get_system(a.name)).last_seen == 50
        finally:
            await store.close()

    asyncio.run(main())


def test_snapshot_is_what_the_hub_decides_from(store_location: str | Path) -> None:
    async def main() -> None:
        store = await Store.open(store_location)
        try:
            key_id = await _key(store, None)
            a, b, c = [await _enrol(store, key_id, n) for n in (1, 2, 3)]
            await store.put_intent(a.name, b.name, b"st", b"sig", 1, None, None)
            await store.add_policy("p", "*", "*", 2)
            await store.put_intent(b.name, a.name, b"st", b"sig", 1, None, "p")
            renewed = await store.issue_certificate(
                a.name, 5, lambda s: IssuedCert(next(_serials), b"der-" + s.name.encode(), 5,
                                                10**10 + 5))
            await store.revoke(c.name, 6)
            snap = await store.snapshot(7, {a.name, b.name, c.name})
            assert set(snap.systems) == {a.name, b.name, c.name}
            assert snap.systems[c.name].state == "revoked"
            assert snap.certificates[a.name] == renewed  # the newest of a's two
            assert snap.certificates[a.name].der == b"der-" + a.name.encode()
            assert c.name not in snap.certificates  # revoked: no current certificate
            assert len(snap.revoked_serials) == 1 and snap.crl_number == 1
            assert [(i.from_name, i.to_name, i.policy) for i in snap.intents] == sorted(
                [(a.name, b.name, None), (b.name, a.name, "p")])
            assert [p.name for p in snap.policies] == ["p"]
            assert (await store.snapshot(7)).certificates == {}  # only those asked for
            assert await store.delete_intent(b.name, a.name, policy="other") is False
            assert await store.delete_intent(b.name, a.name, policy="p") is True
        finally:
            await store.close()

    asyncio.run(main())


def test_a_cancelled_write_leaves_the_store_usable(store_location: str | Path) -> None:
    """A request cancelled while its write waits for the lock (a client gone, shutdown):
    nothing of it is kept, and the next write works (no transaction left open)."""
    async def main() -> None:
        store = await Store.open(store_location)
        try:
            with write_lock_held_elsewhere(store_location):
                task = asyncio.get_running_loop().create_task(store.set_meta({"a": "1"}))
                await asyncio.sleep(0.2)
                assert not task.done()
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, StoreError):
                    await task
            await store.set_meta({"b": "2"})
            assert await store.get_meta("a") is None
            assert await store.get_meta("b") == "2"
        finally:
            await store.close()

    asyncio.run(main())
