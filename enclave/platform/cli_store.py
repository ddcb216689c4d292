"""What the `enclave platform` command modules share (cli.py, gateways.py, policy.py): the
platform's files from --data, and the certificate-size check for changes they make on the store
directly. It sits below all three; none of them imports another for these.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from enclave.platform.init import InitError
from enclave.platform.paths import DATA_ENV, PlatformPaths, PlatformSettings, default_data_dir
from enclave.platform.store import Store, System

Command = Callable[[argparse.Namespace], int]


def data_paths(args: argparse.Namespace) -> PlatformPaths:
    """The platform's files in --data (else $ENCLAVE_PLATFORM_DATA); InitError when neither."""
    data = args.data or default_data_dir()
    if not data:
        raise InitError(f"no data directory: pass --data DIR or set {DATA_ENV}")
    return PlatformPaths(Path(data))


def cert_fits(paths: PlatformPaths, store: Store) -> Callable[[System], None]:
    """The certificate-size check for tag and gateway changes (authority.certificate_fits),
    from the CA's certificate and the platform's settings; no CA key needed."""
    # imported here: keeps `enclave` start-up fast (authority pulls in the CRL and wire modules)
    from enclave.platform.authority import certificate_fits

    settings = PlatformSettings.load(store)
    return certificate_fits(paths.load_ca_certificate(), settings.org,
                            settings.overlay.prefixlen)
