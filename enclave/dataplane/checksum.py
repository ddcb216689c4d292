"""The RFC 1071 Internet checksum (ICMP, the IPv4 header, TCP/UDP over a pseudo-header)."""

from __future__ import annotations

import struct


def inet_checksum(data: bytes) -> int:
    """The one's-complement sum of data's 16-bit words (an odd byte padded with a zero),
    complemented: the value for the checksum field, computed with that field zero."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF
