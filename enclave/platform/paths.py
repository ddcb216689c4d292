"""The platform data directory (0700), and the platform's settings kept in the store.

    DATA/
      platform.db (+ -wal, -shm)   SQLite store (unless --db postgresql://... names another)
      ca.crt                       org CA certificate (PEM, public)
      ca.key                       CA private key, encrypted PKCS#8
      tls.crt                      HTTPS API certificate (PEM, public; agents pin its key)
      tls.key                      HTTPS API private key, encrypted PKCS#8
      relay.key                    relay ticket HMAC key, encrypted (SecretStore)
      keys.kek                     key-encryption key for ca.key, tls.key, relay.key (0600), unless
                                   ENCLAVE_PLATFORM_KEY_PASSPHRASE or the systemd credential
                                   enclave-platform-key-passphrase is used instead
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from enclave.cert.files import ensure_private_dir
from enclave.cert.keystore import (
    PLATFORM_CREDENTIAL,
    PLATFORM_PASSPHRASE_ENV,
    KeyStore,
    SecretStore,
)
from enclave.platform.errors import StoreError
from enclave.platform.store import Store
from enclave.platform.urls import decode_urls

DATA_ENV = "ENCLAVE_PLATFORM_DATA"
DB_ENV = "ENCLAVE_PLATFORM_DB"  # postgresql://... : the store on PostgreSQL (else SQLite)


def default_data_dir() -> str | None:
    return os.environ.get(DATA_ENV)


@dataclass(frozen=True)
class PlatformPaths:
    root: Path
    database: str | None = None  # postgresql://... (--db / ENCLAVE_PLATFORM_DB); None: SQLite

    @property
    def db(self) -> Path:
        return self.root / "platform.db"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def tls_cert(self) -> Path:
        return self.root / "tls.crt"

    def _keystore(self, name: str) -> KeyStore:
        return KeyStore(
            self.root / name, self.root / "keys.kek", PLATFORM_PASSPHRASE_ENV, PLATFORM_CREDENTIAL
        )

    def ca_keystore(self) -> KeyStore:
        return self._keystore("ca.key")

    def tls_keystore(self) -> KeyStore:
        return self._keystore("tls.key")

    def secret_store(self, name: str) -> SecretStore:
        """A symmetric secret in the data directory, encrypted with the same passphrase."""
        return SecretStore(self.root / name, self._keystore("ca.key"))

    def load_ca_certificate(self) -> x509.Certificate:
        return _load_cert(self.ca_cert)

    def load_tls_certificate(self) -> x509.Certificate:
        return _load_cert(self.tls_cert)

    @property
    def store_location(self) -> str | Path:
        """Where the store is: the --db URL (PostgreSQL), else DATA/platform.db."""
        return self.database or self.db

    async def open_store(self) -> Store:
        """The existing store (migrated to this enclave's schema); StoreError when missing."""
        if self.database is not None:  # a node of a shared platform: its files come from there
            ensure_private_dir(self.root)
        if not self.root.is_dir():
            raise StoreError(f"platform data directory {self.root} does not exist "
                             "(run `enclave platform init`)")
        if self.database is None and not self.db.exists():
            raise StoreError(f"no platform database at {self.db} (run `enclave platform init`)")
        store = await Store.open(self.store_location)
        if self.database is not None and await store.get_meta("org") is None:
            await store.close()
            raise StoreError(f"no platform in {store.location} (run `enclave platform init "
                             "--db URL`)")
        return store


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise StoreError(f"{path} not found (run `enclave platform init`)") from None
    except ValueError as exc:
        raise StoreError(f"{path} is corrupt: {exc}") from None


@dataclass(frozen=True)
class PlatformSettings:
    org: str
    overlay: ipaddress.IPv4Network
    url: str
    pin: str
    urls: tuple[str, ...] = ()  # every node's URL (enclave.platform.urls), url first

    @classmethod
    async def load(cls, store: Store) -> PlatformSettings:
        try:
            url = await store.require_meta("url")
            return cls(
                org=await store.require_meta("org"),
                overlay=ipaddress.IPv4Network(await store.require_meta("overlay")),
                url=url,
                pin=await store.require_meta("tls_pin"),
                urls=tuple(decode_urls(await store.get_meta("urls"), url)),
            )
        except ValueError as exc:
            raise StoreError(f"platform settings are corrupt: {exc}") from None
