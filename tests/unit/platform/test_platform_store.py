"""The platform store in-process on both backends (a real SQLite file, a real PostgreSQL
database): migrations, allocation, transactions, batched last-seen times, the hub's snapshot."""

from __future__ import annotations

import ipaddress
import sqlite3
from pathlib import Path

import pytest

from enclave.platform.errors import ApiError, StoreError
from enclave.platform.store import IssuedCert, System
from enclave.platform.store.migrations import LATEST, MIGRATIONS, split_sql
from tests.support.store import SyncStore


def issue(system: System) -> IssuedCert:
    return IssuedCert(serial=abs(hash(system.name)) % (1 << 62) + 1, der=b"cert", not_before=0,
                      not_after=10**10)


def make_key(store: SyncStore, **kw: object) -> tuple[str, bytes]:
    secret = b"s" * 32
    args: dict = dict(secret=secret, now=0, expires_at=None, uses_allowed=None, tags=("t",),
                      approval="auto", ephemeral=False, cert_lifetime=3600)
    args.update(kw)
    return store.create_key(**args).id, secret


def one_system(location: str | Path) -> tuple[SyncStore, System, IssuedCert]:
    """A store with one system enrolled (hostname h, public key 01..01) at time 1, and its
    certificate."""
    store = SyncStore(location)
    key_id, secret = make_key(store)
    system, cert = store.enrol(key_id=key_id, secret=secret, public_key=b"\x01" * 32,
                               hostname="h", overlay=ipaddress.IPv4Network("100.64.0.0/10"),
                               now=1, issue=issue)
    assert cert is not None
    return store, system, cert


def test_migrations_numbered_and_applied_once(store_location: str | Path) -> None:
    assert [m.number for m in MIGRATIONS] == list(range(1, LATEST + 1))
    store = SyncStore(store_location, now=5)
    applied = store.sql("SELECT version, applied_at FROM schema_migrations ORDER BY version")
    assert [(r["version"], r["applied_at"]) for r in applied] == [(n, 5) for n in
                                                                   range(1, LATEST + 1)]
    store.close()
    store = SyncStore(store_location, now=6)  # reopening applies nothing twice
    assert len(store.sql("SELECT version FROM schema_migrations")) == LATEST
    store.sql("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
              (LATEST + 1, 7))
    store.close()
    with pytest.raises(StoreError, match="newer"):
        SyncStore(store_location)


def test_sqlite_wal_and_schema_version_adopted_in_place(tmp_path: Path) -> None:
    """A data directory from before the migrations table (PRAGMA user_version = 3) keeps its
    rows and gets the table, with 1..3 recorded as applied."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        for migration in MIGRATIONS[:3]:
            for statement in split_sql(migration.sql):
                db.execute(statement)
        db.execute("INSERT INTO meta (key, value) VALUES ('org', 'old')")
        db.execute("PRAGMA user_version = 3")
    db.close()
    store = SyncStore(path, now=9)
    assert store.get_meta("org") == "old"
    assert [r["version"] for r in store.sql("SELECT version FROM schema_migrations "
                                            "ORDER BY version")] == list(range(1, LATEST + 1))
    assert store.sql("PRAGMA journal_mode")[0]["journal_mode"] == "wal"
    assert store.sql("PRAGMA user_version")[0]["user_version"] == LATEST
    store.close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {LATEST + 1}")
        db.execute("DELETE FROM schema_migrations")
    db.close()
    with pytest.raises(StoreError, match="newer"):
        SyncStore(path)
    (tmp_path / "bad.db").write_bytes(b"x" * 4096)
    with pytest.raises(StoreError, match="not a database"):
        SyncStore(tmp_path / "bad.db")


def test_small_overlay_never_uses_network_or_broadcast(store_location: str | Path) -> None:
    store = SyncStore(store_location)
    key_id, secret = make_key(store)
    overlay = ipaddress.IPv4Network("100.64.0.0/30")  # 2 usable addresses
    ips = set()
    for i in range(2):
        system, cert = store.enrol(key_id=key_id, secret=secret, public_key=bytes([i]) * 32,
                                   hostname="h", overlay=overlay, now=1, issue=issue)
        assert cert is not None and system.tags == ("t",)
        ips.add(system.overlay_ip)
    assert ips == {ipaddress.IPv4Address("100.64.0.1"), ipaddress.IPv4Address("100.64.0.2")}
    with pytest.raises(ApiError, match="full"):
        store.enrol(key_id=key_id, secret=secret, public_key=b"\x09" * 32, hostname="h",
                    overlay=overlay, now=1, issue=issue)
    with pytest.raises(ApiError, match="already enrolled"):
        store.enrol(key_id=key_id, secret=secret, public_key=b"\x00" * 32, hostname="h",
                    overlay=ipaddress.IPv4Network("100.64.0.0/10"), now=1, issue=issue)
    assert store.get_key(key_id).uses == 2  # type: ignore[union-attr]
    assert len(store.list_systems()) == 2


def test_failed_issue_rolls_back_everything(store_location: str | Path) -> None:
    store = SyncStore(store_location)
    key_id, secret = make_key(store, uses_allowed=1)

    def broken(system: System) -> IssuedCert:
        raise RuntimeError("CA unavailable")

    with pytest.raises(RuntimeError):
        store.enrol(key_id=key_id, secret=secret, public_key=b"\x01" * 32, hostname="h",
                    overlay=ipaddress.IPv4Network("100.64.0.0/10"), now=1, issue=broken)
    assert store.list_systems() == []
    assert store.get_key(key_id).uses == 0  # type: ignore[union-attr]


def test_state_transitions_and_crl_entries(store_location: str | Path) -> None:
    store, system, cert = one_system(store_location)
    n0 = store.crl_number()
    store.disable(system.name, 5)
    assert store.revoked_certificates(2) == [(cert.serial, 5, "hold")]
    with pytest.raises(ApiError, match="disabled"):
        store.issue_certificate(system.name, 6, issue)
    store.enable(system.name)
    assert store.revoked_certificates(2) == []
    store.revoke(system.name, 7)
    assert store.revoked_certificates(2) == [(cert.serial, 7, "cessation")]
    assert store.crl_number() == n0 + 3
    with pytest.raises(ApiError, match="revoked"):
        store.enable(system.name)
    assert store.use_nonce("abc", 10) and not store.use_nonce("abc", 11)
    assert store.use_nonce("abc", 10 + 7200)  # forgotten after the retention window


def test_system_and_certificate_in_one_statement(store_location: str | Path) -> None:
    """What a control channel's authentication reads (one statement, no transaction): the
    system and its newest certificate that is neither revoked nor expired."""
    store, system, first = one_system(store_location)
    got, cert = store.system_and_certificate(system.name, 2)
    assert got is not None and (got.name, got.public_key, got.state) == (
        system.name, system.public_key, "active") and cert == first
    assert store.system_and_certificate(system.name, 10**10)[1] is None  # expired
    assert store.system_and_certificate("NOONE", 2) == (None, None)
    newer = store.issue_certificate(system.name, 3, lambda s: IssuedCert(
        first.serial + 1, b"newer", 3, 10**10 + 5))
    assert store.system_and_certificate(system.name, 4)[1] == newer
    store.disable(system.name, 5)  # its certificates are put on hold
    held, cert = store.system_and_certificate(system.name, 6)
    assert held is not None and held.state == "disabled" and cert is None
