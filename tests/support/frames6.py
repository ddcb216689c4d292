"""IPv6 packets with a correct upper-layer checksum, for tests that hand frames to a kernel
(which checks it: UDP over IPv6 has no "no checksum" form, RFC 8200 8.1)."""

from __future__ import annotations

import ipaddress
import socket
import struct

from tests.support.ident_frames import ipv6, udp


def udp6(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """IPv6 + UDP from src:sport to dst:dport, checksummed."""
    body = bytearray(udp(sport, dport, payload))
    pseudo = (ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
              + struct.pack("!IxxxB", len(body), socket.IPPROTO_UDP))
    data = pseudo + bytes(body) + b"\0" * (len(body) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    body[6:8] = struct.pack("!H", (~total & 0xFFFF) or 0xFFFF)
    return ipv6(src, dst, socket.IPPROTO_UDP, bytes(body))
