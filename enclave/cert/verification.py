"""Verify a peer's system certificate against the org CA. Pure: no I/O, ``now`` passed in.

Checks, in order (the first failure raises CertificateError naming it):
  1. DER parses as an X.509 v3 certificate
  2. issuer == CA subject, and the CA certificate is a CA valid at ``now``
  3. the Ed25519 signature verifies with the CA key
  4. notBefore <= now < notAfter                        ("expired" / "not yet valid")
  5. serial not in ``revoked_serials``                  ("revoked")
  6. CA:FALSE, digitalSignature, Ed25519 subject key
  7. subjectAltName fields (enclave.cert.encoding) agree with the subject and with the CA's org,
     the MAC equals mac_for_name(name), the overlay IP lies inside its prefix
The identity's overlay IPv6 is derived from the CA key and the overlay IP (enclave.cert.overlay6).
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Collection

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID

from enclave.cert.encoding import parse_san
from enclave.cert.errors import CertificateError
from enclave.cert.identity import SystemIdentity
from enclave.cert.keys import public_key_raw
from enclave.cert.names import is_valid_system_name, is_valid_tag, mac_for_name
from enclave.cert.overlay6 import overlay_ip6

MAX_CERT_BYTES = 8192


def _attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    if len(values) != 1:
        return None
    value = values[0].value
    return value if isinstance(value, str) else None


def ca_org(ca: x509.Certificate) -> str:
    org = _attr(ca.subject, NameOID.ORGANIZATION_NAME)
    if org is None:
        raise CertificateError("CA certificate has no organisation")
    return org


def ca_public_key(ca: x509.Certificate) -> Ed25519PublicKey:
    """The CA's Ed25519 key (CertificateError for any other kind)."""
    key = ca.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise CertificateError("CA key must be Ed25519")
    return key


def check_ca_certificate(ca: x509.Certificate, *, now: datetime.datetime) -> None:
    """Raise CertificateError unless ``ca`` is an Ed25519 CA certificate valid at ``now``."""
    try:
        bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise CertificateError("CA certificate has no basicConstraints") from None
    if not bc.ca:
        raise CertificateError("CA certificate is not a CA")
    ca_public_key(ca)
    if not ca.not_valid_before_utc <= now < ca.not_valid_after_utc:
        raise CertificateError("CA certificate expired or not yet valid")


def verify_system_certificate(
    der: bytes,
    ca: x509.Certificate,
    *,
    now: datetime.datetime,
    revoked_serials: Collection[int] = (),
) -> SystemIdentity:
    """Verify a DER system certificate issued by ``ca``; return the identity it carries."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    if len(der) > MAX_CERT_BYTES:
        raise CertificateError("certificate too large")
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CertificateError(f"malformed certificate: {exc}") from None
    if cert.version != x509.Version.v3:
        raise CertificateError("not an X.509 v3 certificate")
    if cert.issuer != ca.subject:
        raise CertificateError("certificate was issued by a different CA (wrong CA)")
    check_ca_certificate(ca, now=now)
    ca_key = ca_public_key(ca)
    try:
        ca_key.verify(cert.signature, cert.tbs_certificate_bytes)
    except InvalidSignature:
        raise CertificateError("certificate signature invalid (wrong CA or tampered)") from None
    if now < cert.not_valid_before_utc:
        raise CertificateError("certificate not yet valid")
    if now >= cert.not_valid_after_utc:
        raise CertificateError("certificate expired")
    if cert.serial_number in revoked_serials:
        raise CertificateError(f"certificate revoked (serial {cert.serial_number})")
    try:
        return _identity(cert, ca)
    except (ValueError, x509.ExtensionNotFound, x509.DuplicateExtension) as exc:
        raise CertificateError(f"malformed certificate: {exc}") from None


def _identity(cert: x509.Certificate, ca: x509.Certificate) -> SystemIdentity:
    exts = cert.extensions
    bc = exts.get_extension_for_class(x509.BasicConstraints).value
    if bc.ca:
        raise CertificateError("a CA certificate cannot be a system certificate")
    if not exts.get_extension_for_class(x509.KeyUsage).value.digital_signature:
        raise CertificateError("certificate key usage lacks digitalSignature")
    public_key = cert.public_key()
    if not isinstance(public_key, Ed25519PublicKey):
        raise CertificateError("system key must be Ed25519")
    san = parse_san(exts.get_extension_for_class(x509.SubjectAlternativeName).value)
    assert san.name is not None and san.org is not None
    assert san.overlay_ip is not None and san.overlay_prefix is not None and san.mac is not None
    if _attr(cert.subject, NameOID.COMMON_NAME) != san.name:
        raise CertificateError("subject CN does not match the identity URI")
    if not is_valid_system_name(san.name):
        raise CertificateError(f"invalid system name {san.name!r}")
    if san.org != ca_org(ca) or _attr(cert.subject, NameOID.ORGANIZATION_NAME) != san.org:
        raise CertificateError("certificate organisation does not match the CA")
    if san.mac != mac_for_name(san.name):
        raise CertificateError("virtual MAC does not match the system name")
    network = ipaddress.IPv4Network(f"{san.overlay_ip}/{san.overlay_prefix}", strict=False)
    if san.overlay_ip in (network.network_address, network.broadcast_address):
        raise CertificateError("overlay IP is a network or broadcast address")
    for tag in san.tags:
        if not is_valid_tag(tag):
            raise CertificateError(f"invalid tag {tag!r}")
    return SystemIdentity(
        name=san.name,
        org=san.org,
        overlay_ip=san.overlay_ip,
        overlay_prefix=san.overlay_prefix,
        mac=san.mac,
        tags=tuple(san.tags),
        public_key=public_key_raw(public_key),
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        gateway_routes=tuple(san.gateway_routes),
        overlay_ip6=overlay_ip6(public_key_raw(ca_public_key(ca)), san.overlay_ip),
    )
