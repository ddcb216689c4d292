"""The org CA: creation, CSRs, and issuing system and TLS server certificates. No I/O.

    agent                                   platform
    generate_private_key()
    build_csr(key) --- CSR (signed by key) --->  parse_csr()  (proof of possession)
                                                 issue_system_certificate(ca_key, ca_cert, ...)
    <------------- system certificate -----------
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from enclave.cert.encoding import build_san
from enclave.cert.errors import CertificateError
from enclave.cert.names import mac_for_name

MAX_CSR_BYTES = 4096
CLOCK_SKEW_ALLOWANCE = datetime.timedelta(minutes=1)  # notBefore is backdated by this much
CA_LIFETIME = datetime.timedelta(days=3650)


def random_serial() -> int:
    """A random positive 63-bit serial (fits a SQLite INTEGER, unguessable, never zero)."""
    return secrets.randbits(62) | (1 << 62)


def _ku(*, digital_signature: bool, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def create_ca(
    org: str, *, now: datetime.datetime, lifetime: datetime.timedelta = CA_LIFETIME
) -> tuple[Ed25519PrivateKey, x509.Certificate]:
    """A new Ed25519 CA key and its self-signed X.509 v3 certificate for ``org``."""
    key = Ed25519PrivateKey.generate()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, f"enclave CA {org}"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(random_serial())
        .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ku(digital_signature=False, cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, None)
    )
    return key, cert


def build_csr(key: Ed25519PrivateKey, common_name: str = "enclave-enrolment") -> bytes:
    """A DER CSR signed by ``key`` (the proof of possession sent at enrolment)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, None)
    )
    return csr.public_bytes(serialization.Encoding.DER)


def parse_csr(data: bytes) -> Ed25519PublicKey:
    """Check a PEM or DER CSR: size, syntax, Ed25519 key, self-signature. Returns its public key."""
    if len(data) > MAX_CSR_BYTES:
        raise CertificateError(f"CSR too large ({len(data)} bytes, max {MAX_CSR_BYTES})")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(data)
        else:
            csr = x509.load_der_x509_csr(data)
        public_key = csr.public_key()
        signature_ok = csr.is_signature_valid
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"malformed CSR: {exc}") from None
    if not isinstance(public_key, Ed25519PublicKey):
        raise CertificateError("CSR key must be Ed25519")
    if not signature_ok:
        raise CertificateError("CSR signature does not match its public key")
    return public_key


def issue_system_certificate(
    ca_key: Ed25519PrivateKey,
    ca_cert: x509.Certificate,
    csr: bytes | Ed25519PublicKey,
    *,
    name: str,
    org: str,
    overlay_ip: ipaddress.IPv4Address,
    overlay_prefix: int,
    tags: tuple[str, ...] = (),
    gateway_routes: tuple[ipaddress.IPv4Network, ...] = (),
    now: datetime.datetime,
    lifetime: datetime.timedelta,
    serial: int | None = None,
) -> x509.Certificate:
    """Issue a system certificate (layout in enclave.cert.encoding) for a CSR or a public key."""
    public_key = parse_csr(csr) if isinstance(csr, bytes) else csr
    not_after = min(now + lifetime, ca_cert.not_valid_after_utc)
    san = build_san(
        org=org,
        name=name,
        overlay_ip=overlay_ip,
        overlay_prefix=overlay_prefix,
        mac=mac_for_name(name),
        tags=tags,
        gateway_routes=gateway_routes,
    )
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(serial if serial is not None else random_serial())
        .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_ku(digital_signature=True, cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(san, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, None)
    )


def issue_tls_server_certificate(
    ca_key: Ed25519PrivateKey,
    ca_cert: x509.Certificate,
    tls_key: ec.EllipticCurvePrivateKey,
    *,
    host: str,
    now: datetime.datetime,
    lifetime: datetime.timedelta = CA_LIFETIME,
) -> x509.Certificate:
    """The platform API's TLS server certificate (ECDSA P-256 key, for broad TLS client support).

    Agents do not rely on the chain: they pin the SHA-256 of its SubjectPublicKeyInfo.
    """
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject)
        .public_key(tls_key.public_key())
        .serial_number(random_serial())
        .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(min(now + lifetime, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .sign(ca_key, None)
    )


def generate_tls_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """Hex SHA-256 of the certificate DER (for display)."""
    return cert.fingerprint(hashes.SHA256()).hex()
