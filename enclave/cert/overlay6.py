"""A system's overlay IPv6: derived from what every peer already has certified, never allocated.

    org ULA prefix (RFC 4193)     fd | global ID (40 bits) | subnet 0 (16 bits)  -> /48 -> /64
        global ID = SHA-256(ULA_DOMAIN || org CA's raw Ed25519 public key)[0:5]
    overlay IPv6                  the /64 with the system's certified overlay IPv4 in its low
                                  32 bits (interface ID 0:0:a.b.c.d)

    e.g. CA key 00..1f, IPv4 100.64.1.2  ->  fdXX:XXXX:XXXX::6440:102 = fdXX:XXXX:XXXX::100.64.1.2

Every input is certified (the CA key is the trust anchor itself, the IPv4 is in the system's
certificate), so every agent of the org computes the same address for the same system, no
certificate or database field holds it, and two systems never share one (their IPv4s differ).
An agent without this module simply has no overlay IPv6.

The TAP holds the address as a /64: the org's whole overlay is one IPv6 link, like its IPv4
range; /64 is the subnet size IPv6 hosts and tools assume (RFC 4291 2.5.1, RFC 7421), and the
embedded IPv4 leaves the upper half of the interface ID zero, so a derived address is never
mistaken for an EUI-64 or SLAAC one.

This module is the one home of the derivation (pure: no I/O).
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Final

ULA_DOMAIN: Final = b"enclave-overlay-ula-v1"
ULA_FIRST_BYTE: Final = 0xFD  # RFC 4193: fc00::/7 with L = 1 (locally assigned)
GLOBAL_ID_BYTES: Final = 5  # 40 bits
SUBNET_ID: Final = 0
PREFIX_LEN: Final = 64  # the TAP's on-link prefix (see the module docstring)
ED25519_KEY_LEN: Final = 32


def org_prefix(ca_public_key: bytes) -> ipaddress.IPv6Network:
    """The org's overlay /64: its ULA /48 (global ID from the CA key) with subnet ID 0."""
    if len(ca_public_key) != ED25519_KEY_LEN:
        raise ValueError(f"a CA public key has {ED25519_KEY_LEN} bytes, got {len(ca_public_key)}")
    global_id = hashlib.sha256(ULA_DOMAIN + ca_public_key).digest()[:GLOBAL_ID_BYTES]
    packed = bytes([ULA_FIRST_BYTE]) + global_id + SUBNET_ID.to_bytes(2, "big") + bytes(8)
    return ipaddress.IPv6Network((packed, PREFIX_LEN))


def overlay_ip6(ca_public_key: bytes, overlay_ip: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    """The overlay IPv6 of the system certified with `overlay_ip` by the CA of `ca_public_key`."""
    prefix = org_prefix(ca_public_key)
    return ipaddress.IPv6Address(int(prefix.network_address) | int(overlay_ip))


def overlay_interface6(ca_public_key: bytes,
                       overlay_ip: ipaddress.IPv4Address) -> ipaddress.IPv6Interface:
    """overlay_ip6 with the org's prefix length, e.g. fdXX:XXXX:XXXX::6440:102/64 (for the TAP)."""
    return ipaddress.IPv6Interface((overlay_ip6(ca_public_key, overlay_ip), PREFIX_LEN))
