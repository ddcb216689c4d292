"""X.509 identities shared by agent and platform: CA, system certificates, keys, revocation.

Layout of the identity inside a certificate: enclave.cert.encoding.
"""

from __future__ import annotations

from enclave.cert.ca import (
    build_csr,
    create_ca,
    issue_system_certificate,
    issue_tls_server_certificate,
    parse_csr,
)
from enclave.cert.crl import RevocationList, RevokedEntry, build_crl, parse_crl
from enclave.cert.errors import CertificateError, KeyStoreError
from enclave.cert.identity import SystemIdentity
from enclave.cert.keys import generate_private_key, public_key_raw, sign, spki_sha256, verify
from enclave.cert.keystore import KeyStore, decrypt_private_key, encrypt_private_key
from enclave.cert.names import mac_for_name
from enclave.cert.verification import check_ca_certificate, verify_system_certificate

__all__ = [
    "CertificateError",
    "KeyStore",
    "KeyStoreError",
    "RevocationList",
    "RevokedEntry",
    "SystemIdentity",
    "build_crl",
    "build_csr",
    "check_ca_certificate",
    "create_ca",
    "decrypt_private_key",
    "encrypt_private_key",
    "generate_private_key",
    "issue_system_certificate",
    "issue_tls_server_certificate",
    "mac_for_name",
    "parse_crl",
    "parse_csr",
    "public_key_raw",
    "sign",
    "spki_sha256",
    "verify",
    "verify_system_certificate",
]
