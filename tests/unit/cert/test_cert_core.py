"""Certificate core: CA, issuing, verification, signatures, CRLs (real cryptography, no I/O)."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from enclave.cert import (
    CertificateError,
    build_crl,
    build_csr,
    create_ca,
    generate_private_key,
    issue_system_certificate,
    parse_crl,
    parse_csr,
    public_key_raw,
    sign,
    verify,
    verify_system_certificate,
)
from enclave.cert.ca import MAX_CSR_BYTES, issue_tls_server_certificate
from enclave.cert.crl import RevokedEntry
from enclave.cert.encoding import build_san
from enclave.cert.names import (
    is_valid_system_name,
    mac_for_name,
    normalise_tags,
    random_system_name,
)

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)
ORG = "acme"


@pytest.fixture(scope="module")
def ca() -> tuple:
    return create_ca(ORG, now=NOW)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def issue(ca: tuple, **kw: object) -> tuple:
    key = generate_private_key()
    args: dict = dict(
        name="V88RY",
        org=ORG,
        overlay_ip=ipaddress.IPv4Address("100.70.1.2"),
        overlay_prefix=10,
        tags=("db", "web"),
        now=NOW,
        lifetime=DAY,
    )
    args.update(kw)
    cert = issue_system_certificate(ca[0], ca[1], build_csr(key), **args)
    return key, cert


def test_issue_and_verify_round_trip(ca: tuple) -> None:
    key, cert = issue(ca, gateway_routes=(ipaddress.IPv4Network("198.19.5.0/24"),))
    ident = verify_system_certificate(der(cert), ca[1], now=NOW)
    assert ident.name == "V88RY"
    assert ident.org == ORG
    assert ident.overlay_ip == ipaddress.IPv4Address("100.70.1.2")
    assert ident.overlay_prefix == 10
    assert str(ident.overlay_interface) == "100.70.1.2/10"
    assert ident.mac == mac_for_name("V88RY")
    assert ident.tags == ("db", "web")
    assert ident.public_key == public_key_raw(key)
    assert ident.serial == cert.serial_number
    assert ident.not_after == NOW + DAY
    assert ident.not_before <= NOW
    assert ident.gateway_routes == (ipaddress.IPv4Network("198.19.5.0/24"),)


def test_expired_and_not_yet_valid(ca: tuple) -> None:
    _, cert = issue(ca)
    with pytest.raises(CertificateError, match="expired"):
        verify_system_certificate(der(cert), ca[1], now=NOW + DAY)
    with pytest.raises(CertificateError, match="not yet valid"):
        verify_system_certificate(der(cert), ca[1], now=NOW - HOUR)
    # one second before expiry is still fine
    verify_system_certificate(der(cert), ca[1], now=NOW + DAY - datetime.timedelta(seconds=1))


def test_naive_now_rejected(ca: tuple) -> None:
    _, cert = issue(ca)
    with pytest.raises(ValueError):
        verify_system_certificate(der(cert), ca[1], now=NOW.replace(tzinfo=None))


def test_wrong_ca_same_name_rejected(ca: tuple) -> None:
    _, cert = issue(ca)
    other = create_ca(ORG, now=NOW)  # same subject, different key
    with pytest.raises(CertificateError, match="signature invalid"):
        verify_system_certificate(der(cert), other[1], now=NOW)
    third = create_ca("other", now=NOW)
    with pytest.raises(CertificateError, match="wrong CA"):
        verify_system_certificate(der(cert), third[1], now=NOW)


def test_revoked_serial_rejected(ca: tuple) -> None:
    _, cert = issue(ca)
    with pytest.raises(CertificateError, match="revoked"):
        verify_system_certificate(
            der(cert), ca[1], now=NOW, revoked_serials=frozenset({cert.serial_number})
        )


@pytest.mark.parametrize(
    "blob",
    [b"", b"\x30\x03\x02\x01\x01", b"garbage" * 10, b"\x30" + b"\xff" * 20, b"A" * 9000],
)
def test_malformed_der_rejected(ca: tuple, blob: bytes) -> None:
    with pytest.raises(CertificateError):
        verify_system_certificate(blob, ca[1], now=NOW)


def test_tampered_certificate_rejected(ca: tuple) -> None:
    _, cert = issue(ca)
    raw = bytearray(der(cert))
    idx = raw.find(b"100.70.1.2") if b"100.70.1.2" in raw else raw.find(bytes([100, 70, 1, 2]))
    assert idx > 0
    raw[idx + 3] ^= 1  # overlay IP 100.70.1.2 -> 100.70.1.3
    with pytest.raises(CertificateError):
        verify_system_certificate(bytes(raw), ca[1], now=NOW)


def _forge(ca: tuple, san: x509.SubjectAlternativeName, cn: str = "V88RY", is_ca: bool = False,
           org: str = ORG) -> bytes:
    key = generate_private_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                                 x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca[1].subject)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(NOW - HOUR)
        .not_valid_after(NOW + HOUR)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(san, critical=False)
        .sign(ca[0], None)
    )
    return der(cert)


def _san(name: str = "V88RY", mac: bytes | None = None, org: str = ORG,
         ip: str = "100.70.1.2") -> x509.SubjectAlternativeName:
    return build_san(org=org, name=name, overlay_ip=ipaddress.IPv4Address(ip), overlay_prefix=10,
                     mac=mac if mac is not None else mac_for_name(name), tags=(),
                     gateway_routes=())


def test_ca_signed_but_inconsistent_certificates_rejected(ca: tuple) -> None:
    # sanity: the forging helper makes a valid certificate when everything agrees
    assert verify_system_certificate(_forge(ca, _san()), ca[1], now=NOW).name == "V88RY"
    cases = {
        "CN": _forge(ca, _san(), cn="OTHER"),
        "MAC": _forge(ca, _san(mac=b"\x02\x00\x00\x00\x00\x01")),
        "organisation": _forge(ca, _san(org="evil"), org="evil"),
        "CA certificate": _forge(ca, _san(), is_ca=True),
        "broadcast": _forge(ca, _san(ip="100.127.255.255")),
        "unknown": _forge(ca, x509.SubjectAlternativeName(
            [*_san(), x509.UniformResourceIdentifier("enclave:admin:true")])),
        "exactly one IPv4": _forge(ca, x509.SubjectAlternativeName(
            [*_san(), x509.IPAddress(ipaddress.IPv4Address("100.64.0.9"))])),
        "no enclave:// identity": _forge(ca, x509.SubjectAlternativeName(
            [e for e in _san() if not (isinstance(e, x509.UniformResourceIdentifier)
                                       and e.value.startswith("enclave://"))])),
    }
    for why, blob in cases.items():
        with pytest.raises(CertificateError, match=why):
            verify_system_certificate(blob, ca[1], now=NOW)


def test_csr_checks() -> None:
    key = generate_private_key()
    csr = build_csr(key)
    assert public_key_raw(parse_csr(csr)) == public_key_raw(key)
    pem = x509.load_der_x509_csr(csr).public_bytes(serialization.Encoding.PEM)
    assert public_key_raw(parse_csr(pem)) == public_key_raw(key)
    with pytest.raises(CertificateError, match="too large"):
        parse_csr(b"\x30" * (MAX_CSR_BYTES + 1))
    with pytest.raises(CertificateError, match="malformed"):
        parse_csr(b"not a csr")
    # flip a byte in the signature: the CSR no longer proves possession
    bad = bytearray(csr)
    bad[-5] ^= 0xFF
    with pytest.raises(CertificateError, match="signature"):
        parse_csr(bytes(bad))
    # a non-Ed25519 key is refused
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(ec_key, hashes.SHA256())
    )
    with pytest.raises(CertificateError, match="Ed25519"):
        parse_csr(ec_csr.public_bytes(serialization.Encoding.DER))


def test_sign_verify() -> None:
    key = generate_private_key()
    pub = public_key_raw(key)
    sig = sign(key, b"challenge")
    assert len(sig) == 64
    assert verify(pub, sig, b"challenge")
    assert not verify(pub, sig, b"challengf")
    assert not verify(public_key_raw(generate_private_key()), sig, b"challenge")
    assert not verify(pub[:31], sig, b"challenge")
    assert not verify(pub, sig[:63], b"challenge")
    assert not verify(b"\xff" * 32, sig, b"challenge")


def test_crl_round_trip_and_forgery(ca: tuple) -> None:
    entries = [RevokedEntry(11, NOW), RevokedEntry(12, NOW, x509.ReasonFlags.certificate_hold)]
    blob = build_crl(ca[0], ca[1], entries, now=NOW, number=3)
    crl = parse_crl(blob, ca[1], now=NOW)
    assert crl.serials == frozenset({11, 12})
    assert crl.number == 3
    assert crl.next_update == NOW + DAY
    empty = parse_crl(build_crl(ca[0], ca[1], [], now=NOW, number=4), ca[1], now=NOW)
    assert empty.serials == frozenset()
    other = create_ca(ORG, now=NOW)
    with pytest.raises(CertificateError, match="signature"):
        parse_crl(build_crl(other[0], other[1], [], now=NOW, number=1), ca[1], now=NOW)
    with pytest.raises(CertificateError, match="malformed"):
        parse_crl(b"junk", ca[1], now=NOW)
    with pytest.raises(CertificateError, match="future"):
        parse_crl(blob, ca[1], now=NOW - DAY)


def test_names_and_macs() -> None:
    names = {random_system_name() for _ in range(200)}
    assert len(names) > 190
    assert all(is_valid_system_name(n) and len(n) == 5 for n in names)
    assert not is_valid_system_name("v88ry") and not is_valid_system_name("ILOU1")
    for n in list(names)[:50]:
        mac = mac_for_name(n)
        assert len(mac) == 6
        assert mac[0] & 0x01 == 0  # unicast
        assert mac[0] & 0x02 == 0x02  # locally administered
    assert mac_for_name("V88RY") == mac_for_name("V88RY") != mac_for_name("V88RZ")
    assert normalise_tags("web, db,web") == ("db", "web")
    with pytest.raises(ValueError, match="invalid tag"):
        normalise_tags(["Web Server"])


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_openssl_reads_every_certificate(ca: tuple, tmp_path: object) -> None:
    _, cert = issue(ca)
    tls = issue_tls_server_certificate(ca[0], ca[1], ec.generate_private_key(ec.SECP256R1()),
                                       host="127.0.0.1", now=NOW)
    for c, expect in ((ca[1], "CA:TRUE"), (cert, "enclave://acme/V88RY"), (tls, "127.0.0.1")):
        out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-text"], input=der(c),
                             capture_output=True, check=True, timeout=10).stdout.decode()
        assert expect in out
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-text"],
                         input=der(cert), capture_output=True, check=True, timeout=10).stdout
    assert b"enclave:mac:" in out and b"enclave:tag:web" in out and b"100.70.1.2" in out
