"""The platform store in-process on a real SQLite file: migrations, allocation, transactions."""

from __future__ import annotations

import ipaddress
import sqlite3
from pathlib import Path

import pytest

from enclave.platform.errors import ApiError, StoreError
from enclave.platform.schema import MIGRATIONS
from enclave.platform.store import IssuedCert, Store, System


def issue(system: System) -> IssuedCert:
    return IssuedCert(serial=abs(hash(system.name)) % (1 << 62) + 1, der=b"cert", not_before=0,
                      not_after=10**10)


def make_key(store: Store, **kw: object) -> tuple[str, bytes]:
    secret = b"s" * 32
    args: dict = dict(secret=secret, now=0, expires_at=None, uses_allowed=None, tags=("t",),
                      approval="auto", ephemeral=False, cert_lifetime=3600)
    args.update(kw)
    return store.create_key(**args).id, secret


def test_migrations_and_wal(tmp_path: Path) -> None:
    store = Store(tmp_path / "p.db")
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    store.close()
    Store(tmp_path / "p.db").close()  # reopening applies nothing twice
    with sqlite3.connect(tmp_path / "p.db") as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="newer"):
        Store(tmp_path / "p.db")
    (tmp_path / "bad.db").write_bytes(b"x" * 4096)
    with pytest.raises(StoreError, match="cannot open"):
        Store(tmp_path / "bad.db")


def test_small_overlay_never_uses_network_or_broadcast(tmp_path: Path) -> None:
    store = Store(tmp_path / "p.db")
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


def test_failed_issue_rolls_back_everything(tmp_path: Path) -> None:
    store = Store(tmp_path / "p.db")
    key_id, secret = make_key(store, uses_allowed=1)

    def broken(system: System) -> IssuedCert:
        raise RuntimeError("CA unavailable")

    with pytest.raises(RuntimeError):
        store.enrol(key_id=key_id, secret=secret, public_key=b"\x01" * 32, hostname="h",
                    overlay=ipaddress.IPv4Network("100.64.0.0/10"), now=1, issue=broken)
    assert store.list_systems() == []
    assert store.get_key(key_id).uses == 0  # type: ignore[union-attr]


def test_state_transitions_and_crl_entries(tmp_path: Path) -> None:
    store = Store(tmp_path / "p.db")
    key_id, secret = make_key(store)
    system, cert = store.enrol(key_id=key_id, secret=secret, public_key=b"\x01" * 32,
                               hostname="h", overlay=ipaddress.IPv4Network("100.64.0.0/10"),
                               now=1, issue=issue)
    assert cert is not None
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
