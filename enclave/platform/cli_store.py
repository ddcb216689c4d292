"""What the `enclave platform` command modules share (cli.py, gateways.py, policy.py): the
platform's files from --data, and the certificate-size check for changes they make on the store
directly. It sits below all three; none of them imports another for these.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from enclave.platform.init import InitError
from enclave.platform.paths import (
    DATA_ENV,
    DB_ENV,
    PlatformPaths,
    PlatformSettings,
    default_data_dir,
)
from enclave.platform.store import Store, System, is_database_url

Command = Callable[[argparse.Namespace], int]
T = TypeVar("T")


def data_paths(args: argparse.Namespace) -> PlatformPaths:
    """The platform's files in --data (else $ENCLAVE_PLATFORM_DATA); InitError when neither."""
    data = args.data or default_data_dir()
    if not data:
        raise InitError(f"no data directory: pass --data DIR or set {DATA_ENV}")
    database = args.db or os.environ.get(DB_ENV) or None
    if database is not None and not is_database_url(database):
        raise InitError(f"--db must be a postgresql://... URL (without it: SQLite in --data), "
                        f"got {database.split('://')[0]!r}")
    return PlatformPaths(Path(data), database)


def with_store(args: argparse.Namespace,
               operation: Callable[[Store, PlatformPaths], Awaitable[T]]) -> T:
    """Run one admin operation on the store of --data / --db, opened and closed around it
    (each operation is its own short transaction: no lock is held while anything else waits)."""
    paths = data_paths(args)

    async def run() -> T:
        store = await paths.open_store()
        try:
            return await operation(store, paths)
        finally:
            await store.close()

    return asyncio.run(run())


async def cert_fits(paths: PlatformPaths, store: Store) -> Callable[[System], None]:
    """The certificate-size check for tag and gateway changes (authority.certificate_fits),
    from the CA's certificate and the platform's settings; no CA key needed."""
    # imported here: keeps `enclave` start-up fast (authority pulls in the CRL and wire modules)
    from enclave.platform.authority import certificate_fits

    settings = await PlatformSettings.load(store)
    return certificate_fits(paths.load_ca_certificate(), settings.org,
                            settings.overlay.prefixlen)
