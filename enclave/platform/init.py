"""`enclave platform init`: create the CA, the API TLS identity, the store and the admin token."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import secrets
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization

from enclave.cert.ca import create_ca, generate_tls_key, issue_tls_server_certificate
from enclave.cert.files import atomic_write, ensure_private_dir
from enclave.cert.keys import spki_sha256
from enclave.cert.names import is_valid_org
from enclave.platform.errors import InitError
from enclave.platform.nodefiles import publish
from enclave.platform.paths import PlatformPaths
from enclave.platform.relay import KEY_FILE as RELAY_KEY_FILE
from enclave.platform.relay import load_or_create_key
from enclave.platform.store import Store, secret_hash
from enclave.platform.urls import check_urls, encode_urls

ADMIN_TOKEN_PREFIX = "enclave-admin-"


async def _refuse_used_database(location: str) -> None:
    store = await Store.open(location)
    try:
        if await store.get_meta("org") is not None:
            raise InitError(f"{store.location} already holds a platform; refusing to overwrite "
                            "it")
    finally:
        await store.close()


async def _init_database(location: str | Path, meta: dict[str, str], now: int,
                         shared_from: Path | None = None) -> None:
    """Create (migrate) the store and write the platform's settings in one transaction;
    shared_from: a data directory whose keys and certificates every node loads from the store
    (enclave.platform.nodefiles)."""
    store = await Store.open(location, now)
    try:
        await store.set_meta(meta)
        if shared_from is not None:
            await publish(store, shared_from)
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
    url: str | Sequence[str],
    org: str,
    overlay: ipaddress.IPv4Network,
    now: datetime.datetime,
) -> tuple[str, str]:
    """Create everything; returns (admin token, TLS SPKI pin). Refuses to overwrite.
    url: the platform's URL, or several (one per node; the first names the TLS certificate),
    all carried in every enrolment token."""
    urls = check_urls([url] if isinstance(url, str) else list(url))
    parts = urlsplit(urls[0])
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
    tls_cert = issue_tls_server_certificate(ca_key, ca_cert, tls_key, host=parts.hostname or "",
                                           now=now)
    paths.tls_keystore().save(tls_key)
    atomic_write(paths.tls_cert, tls_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    pin = spki_sha256(tls_cert)
    admin_token = ADMIN_TOKEN_PREFIX + secrets.token_urlsafe(32)
    meta = {
        "org": org,
        "overlay": str(overlay),
        "url": urls[0],
        "urls": encode_urls(urls),
        "tls_pin": pin,
        "admin_token_hash": secret_hash(admin_token.encode()).hex(),
        "created_at": str(int(now.timestamp())),
    }
    if paths.database is not None:
        load_or_create_key(paths.secret_store(RELAY_KEY_FILE))  # one relay key for every node
        asyncio.run(_init_database(paths.database, meta, int(now.timestamp()), paths.root))
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
