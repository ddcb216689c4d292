"""The platform's key and certificate files, kept in a shared (PostgreSQL) store for every node.

Several `enclave platform serve --db postgresql://...` nodes are one platform: one CA, one TLS
identity (one pinned fingerprint in every enrolment token), one relay ticket key. `platform init
--db` copies these files into the store's meta table (``file:NAME`` = base64 of the file as it
is on disk: the private keys stay encrypted under the key-encryption key); a node whose data
directory lacks them writes them from the store before it starts (materialise). The
key-encryption key itself is never stored: every node is given it (the same
ENCLAVE_PLATFORM_KEY_PASSPHRASE or systemd credential, or a copy of keys.kek).

A file present on the node that differs from the store's copy is an error: that node would be
another platform.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from enclave.cert.files import atomic_write, ensure_private_dir
from enclave.platform.errors import StoreError
from enclave.platform.store import Store

META_PREFIX = "file:"
# name -> file mode; certificates are public, keys are encrypted and private
SHARED_FILES: dict[str, int] = {
    "ca.crt": 0o644, "ca.key": 0o600, "tls.crt": 0o644, "tls.key": 0o600, "relay.key": 0o600,
}


async def publish(store: Store, root: Path) -> list[str]:
    """Copy every shared file present in ``root`` into the store; the names copied."""
    values = {META_PREFIX + name: base64.b64encode((root / name).read_bytes()).decode()
              for name in SHARED_FILES if (root / name).exists()}
    if values:
        await store.set_meta(values)
    return sorted(name[len(META_PREFIX):] for name in values)


async def materialise(store: Store, root: Path) -> list[str]:
    """Write the store's shared files missing in ``root``; the names written. StoreError when
    a stored copy is corrupt or a local file differs from it."""
    written = []
    for name, mode in SHARED_FILES.items():
        stored = await store.get_meta(META_PREFIX + name)
        if stored is None:
            continue
        try:
            data = base64.b64decode(stored, validate=True)
        except (binascii.Error, ValueError):
            raise StoreError(f"the platform database's copy of {name} is corrupt") from None
        path = root / name
        if path.exists():
            if path.read_bytes() != data:
                raise StoreError(f"{path} differs from the platform database's {name}: this "
                                 "data directory belongs to another platform")
            continue
        ensure_private_dir(root)
        atomic_write(path, data, mode)
        written.append(name)
    return written
