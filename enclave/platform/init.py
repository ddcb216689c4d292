"""`enclave platform init`: create the CA, the API TLS identity, the store and the admin token."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization

from enclave.cert.ca import create_ca, generate_tls_key, issue_tls_server_certificate
from enclave.cert.files import atomic_write, ensure_private_dir
from enclave.cert.keys import spki_sha256
from enclave.cert.names import is_valid_org
from enclave.platform.paths import PlatformPaths
from enclave.platform.store import Store, secret_hash

ADMIN_TOKEN_PREFIX = "enclave-admin-"


class InitError(Exception):
    pass


async def _refuse_used_database(location: str) -> None:
    store = await Store.open(location)
    try:
        if await store.get_meta("org") is not None:
            raise InitError(f"{store.location} already holds a platform; refusing to overwrite "
                            "it")
    finally:
        await store.close()


async def _init_database(location: str | Path, meta: dict[str, str], now: int) -> None:
    """Create (migrate) the store and write the platform's settings in one transaction."""
    store = await Store.open(location, now)
    try:
        await store.set_meta(meta)
    finally:
        await store.close()


def validate_overlay(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(text)
    except ValueError as exc:
        raise InitError(f"invalid overlay range {text!r}: {exc}") from None
    if not 8 <= net.prefixlen <= 30:
        raise InitError("overlay prefix length must be between /8 and /30")
    return net


def init_platform(
    paths: PlatformPaths,
    *,
    url: str,
    org: str,
    overlay: ipaddress.IPv4Network,
    now: datetime.datetime,
) -> tuple[str, str]:
    """Create everything; returns (admin token, TLS SPKI pin). Refuses to overwrite."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.port is None:
        raise InitError(f"--url must look like https://HOST:PORT, got {url!r}")
    if not is_valid_org(org):
        raise InitError(f"invalid org name {org!r} (lower-case letters, digits, '-')")
    if paths.ca_cert.exists() or (paths.database is None and paths.db.exists()):
        raise InitError(f"{paths.root} already holds a platform; refusing to overwrite it")
    if paths.database is not None:
        asyncio.run(_refuse_used_database(paths.database))
    ensure_private_dir(paths.root)
    ca_key, ca_cert = create_ca(org, now=now)
    paths.ca_keystore().save(ca_key)
    atomic_write(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    tls_key = generate_tls_key()
    tls_cert = issue_tls_server_certificate(ca_key, ca_cert, tls_key, host=parts.hostname, now=now)
    paths.tls_keystore().save(tls_key)
    atomic_write(paths.tls_cert, tls_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    pin = spki_sha256(tls_cert)
    admin_token = ADMIN_TOKEN_PREFIX + secrets.token_urlsafe(32)
    meta = {
        "org": org,
        "overlay": str(overlay),
        "url": url,
        "tls_pin": pin,
        "admin_token_hash": secret_hash(admin_token.encode()).hex(),
        "created_at": str(int(now.timestamp())),
    }
    if paths.database is not None:
        asyncio.run(_init_database(paths.database, meta, int(now.timestamp())))
        return admin_token, pin
    tmp_db = paths.db.with_name("platform.db.init")
    for leftover in (tmp_db, tmp_db.with_name("platform.db.init-wal")):
        leftover.unlink(missing_ok=True)
    asyncio.run(_init_database(tmp_db, meta, int(now.timestamp())))
    tmp_db.rename(paths.db)  # the store appears only once it is complete
    for leftover in (tmp_db.with_name("platform.db.init-wal"),
                     tmp_db.with_name("platform.db.init-shm")):
        leftover.unlink(missing_ok=True)
    paths.db.chmod(0o600)
    return admin_token, pin
