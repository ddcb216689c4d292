"""enclave.cert.overlay6: a system's overlay IPv6 is the org's ULA /64 (from the CA key) with
its certified overlay IPv4 in the low 32 bits; verification hands it out with the identity."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding

from enclave.cert import create_ca, issue_system_certificate, public_key_raw
from enclave.cert.overlay6 import org_prefix, overlay_interface6, overlay_ip6
from enclave.cert.verification import verify_system_certificate

V4 = ipaddress.IPv4Address

# (number, CA public key, overlay IPv4, overlay IPv6): fixed vectors, computed once
VECTORS = [
    (1, bytes(range(32)), "100.64.1.2", "fd7f:75e3:1e7e::6440:102"),
    (2, bytes(range(32)), "100.127.255.254", "fd7f:75e3:1e7e::647f:fffe"),
    (3, b"\xff" * 32, "100.64.0.7", "fdd7:9976:8831::6440:7"),
]


@pytest.mark.parametrize(("number", "key", "ip4", "ip6"), VECTORS)
def test_vectors(number: int, key: bytes, ip4: str, ip6: str) -> None:
    got = overlay_ip6(key, V4(ip4))
    assert got == ipaddress.IPv6Address(ip6), number
    assert got.packed[12:] == V4(ip4).packed  # the IPv4 in the low 32 bits
    assert got.packed[8:12] == bytes(4)  # the rest of the interface ID zero


def test_prefix_is_rfc4193_ula_with_the_hashed_global_id_and_subnet_0() -> None:
    key = bytes(range(32))
    prefix = org_prefix(key)
    assert prefix.prefixlen == 64
    packed = prefix.network_address.packed
    assert packed[0] == 0xFD  # fc00::/7, L = 1
    assert packed[1:6] == hashlib.sha256(b"enclave-overlay-ula-v1" + key).digest()[:5]
    assert packed[6:8] == b"\0\0"  # subnet ID 0
    assert prefix.subnet_of(ipaddress.IPv6Network("fd00::/8"))
    assert overlay_interface6(key, V4("100.64.1.2")) == ipaddress.IPv6Interface(
        "fd7f:75e3:1e7e::6440:102/64")


def test_different_cas_give_different_prefixes_and_systems_different_addresses() -> None:
    a, b = bytes(32), bytes(31) + b"\x01"
    assert org_prefix(a) != org_prefix(b)
    assert overlay_ip6(a, V4("100.64.0.2")) != overlay_ip6(a, V4("100.64.0.3"))


@pytest.mark.parametrize("key", [b"", bytes(31), bytes(33)])
def test_a_key_of_the_wrong_length_is_a_clear_error(key: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        org_prefix(key)


def test_verification_derives_the_identity_overlay_ipv6_from_the_ca_key() -> None:
    now = dt.datetime.now(dt.UTC)
    ca_key, ca = create_ca("acme", now=now - dt.timedelta(days=1))
    der = issue_system_certificate(
        ca_key, ca, Ed25519PrivateKey.generate().public_key(), name="3ZM8D", org="acme",
        overlay_ip=V4("100.64.0.3"), overlay_prefix=10, now=now - dt.timedelta(minutes=5),
        lifetime=dt.timedelta(days=1)).public_bytes(Encoding.DER)
    ident = verify_system_certificate(der, ca, now=now)
    want = overlay_ip6(public_key_raw(ca_key), V4("100.64.0.3"))
    assert ident.overlay_ip6 == want
    assert ident.overlay_interface6 == ipaddress.IPv6Interface((want, 64))
