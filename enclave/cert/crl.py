"""CA-signed revocation lists (X.509 v2 CRLs). Pure: no I/O, ``now`` passed in.

A disabled system's certificates are listed with reason certificateHold (undone by `enable`);
revoked or removed systems with cessationOfOperation / keyCompromise. Peers treat every listed
serial as unusable and end connections with it.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave.cert.errors import CertificateError

CRL_VALIDITY = datetime.timedelta(days=1)
MAX_CRL_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class RevokedEntry:
    serial: int
    revoked_at: datetime.datetime
    reason: x509.ReasonFlags = x509.ReasonFlags.cessation_of_operation


@dataclass(frozen=True)
class RevocationList:
    serials: frozenset[int]
    this_update: datetime.datetime
    next_update: datetime.datetime | None
    number: int | None


def build_crl(
    ca_key: Ed25519PrivateKey,
    ca_cert: x509.Certificate,
    entries: Iterable[RevokedEntry],
    *,
    now: datetime.datetime,
    number: int,
    validity: datetime.timedelta = CRL_VALIDITY,
) -> bytes:
    """A DER CRL signed by the CA listing ``entries``; ``number`` must grow with each change."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + validity)
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for entry in entries:
        revoked = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.revoked_at)
            .add_extension(x509.CRLReason(entry.reason), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(revoked)
    return builder.sign(ca_key, None).public_bytes(serialization.Encoding.DER)


def parse_crl(der: bytes, ca: x509.Certificate, *, now: datetime.datetime) -> RevocationList:
    """Verify a DER (or PEM) CRL's issuer and CA signature; return the revoked serials.

    A CRL past its nextUpdate is still returned (stale revocations are better than none);
    callers may compare ``next_update`` with ``now`` to decide to refetch.
    """
    if len(der) > MAX_CRL_BYTES:
        raise CertificateError("revocation list too large")
    try:
        if der.lstrip().startswith(b"-----BEGIN"):
            crl = x509.load_pem_x509_crl(der)
        else:
            crl = x509.load_der_x509_crl(der)
        issuer = crl.issuer
        serials = frozenset(r.serial_number for r in crl)
        this_update = crl.last_update_utc
        next_update = crl.next_update_utc
    except ValueError as exc:
        raise CertificateError(f"malformed revocation list: {exc}") from None
    if issuer != ca.subject:
        raise CertificateError("revocation list was issued by a different CA")
    if not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
        raise CertificateError("revocation list signature invalid")
    if this_update > now + datetime.timedelta(minutes=5):
        raise CertificateError("revocation list is from the future")
    try:
        number: int | None = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    return RevocationList(serials, this_update, next_update, number)
