"""Shared case tables for the TSO split / GRO coalesce tests (test_offload, test_offload_inplace),
built with the reference model in tests.support.offload_frames.

    SPLIT_CASES / GRO_CASES   (id, Seg, mss): superframes a correct engine splits / rebuilds
    REJECT_CASES              (number, description, packet, error code): malformed superframes
    GOOD / GOOD6              a valid IPv4 / IPv6 superframe (4000 bytes, mss 1000)
"""

from __future__ import annotations

import struct

from tests.support.offload_frames import (
    ACK,
    CWR,
    DST_MAC,
    ECE,
    FIN,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP,
    GSO_UDP_L4,
    NEEDS_CSUM,
    PSH,
    SRC_MAC,
    TS_OPTS,
    Seg,
    payload,
    superframe,
    vnet,
)

SPLIT_CASES = [
    # (id, Seg, mss)
    ("v4", Seg(payload(14000)), 1388),
    ("v6", Seg(payload(14000), v6=True), 1368),
    ("v4-vlan", Seg(payload(9000), vlan=42), 1400),
    ("v6-vlan", Seg(payload(9000), v6=True, vlan=7), 1400),
    ("v4-options", Seg(payload(7000), ip_opts=bytes([1, 1, 1, 0]), tcp_opts=TS_OPTS), 1376),
    ("v6-options", Seg(payload(7000), v6=True, tcp_opts=TS_OPTS), 1356),
    ("psh", Seg(payload(5000), flags=ACK | PSH), 1000),
    ("fin-psh", Seg(payload(5000), flags=ACK | PSH | FIN), 1000),
    ("cwr-ece", Seg(payload(5000), flags=ACK | CWR | ECE), 1000),
    ("exact-multiple", Seg(payload(4000)), 1000),
    ("single", Seg(payload(700)), 1000),
    ("one-byte-tail", Seg(payload(2001)), 1000),
    ("odd-mss", Seg(payload(3333)), 999),
    ("wrap", Seg(payload(6000), seq=2**32 - 2500, ident=0xFFFE), 1448),
    ("max-64k", Seg(payload(65535 - 40)), 1448),
    ("64-segments", Seg(payload(64 * 100)), 100),
]


def patched(pkt: bytes, at: int, value: bytes) -> bytes:
    return pkt[:at] + value + pkt[at + len(value) :]


GOOD = superframe(Seg(payload(4000)), 1000)  # 14 + 20 + 20 headers; vnet 10
GOOD6 = superframe(Seg(payload(4000), v6=True), 1000)
IP = 10 + 14  # IPv4 header offset inside GOOD
TCP = IP + 20
REJECT_CASES = [
    # (number, description, packet, error code)
    (1, "empty", b"", -1),
    (2, "vnet header only", GOOD[:10], -1),
    (3, "runt Ethernet frame", GOOD[:20], -1),
    (4, "gso_type UDP (UFO)", patched(GOOD, 1, bytes([GSO_UDP])), -2),
    (5, "gso_type UDP_L4", patched(GOOD, 1, bytes([GSO_UDP_L4])), -2),
    (6, "gso TCPV4 over an IPv6 frame", patched(GOOD6, 1, bytes([GSO_TCPV4])), -2),
    (7, "gso TCPV6 over an IPv4 frame", patched(GOOD, 1, bytes([GSO_TCPV6])), -2),
    (8, "ARP ethertype with gso", patched(GOOD, 22, b"\x08\x06"), -3),
    (9, "IP version 5", patched(GOOD, IP, b"\x55"), -3),
    (10, "IHL 4", patched(GOOD, IP, b"\x44"), -3),
    (11, "IHL beyond the frame", patched(GOOD[: IP + 30], IP, b"\x4f"), -1),
    (12, "protocol UDP", patched(GOOD, IP + 9, b"\x11"), -3),
    (13, "total length too long", patched(GOOD, IP + 2, struct.pack("!H", 4041)), -3),
    (14, "total length too short", patched(GOOD, IP + 2, struct.pack("!H", 4039)), -3),
    (15, "truncated frame", GOOD[:-1], -3),
    (16, "more fragments", patched(GOOD, IP + 6, b"\x20\x00"), -3),
    (17, "fragment offset", patched(GOOD, IP + 6, b"\x00\x10"), -3),
    (18, "TCP data offset 4", patched(GOOD, TCP + 12, b"\x40"), -4),
    (
        19,
        "TCP header beyond the packet",
        patched(patched(GOOD[: TCP + 30], IP + 2, struct.pack("!H", 50)), TCP + 12, b"\xf0"),
        -1,
    ),
    (20, "csum_start not the TCP header", patched(GOOD, 6, struct.pack("=H", 30)), -5),
    (21, "csum_offset not 16", patched(GOOD, 8, struct.pack("=H", 6)), -5),
    (22, "NEEDS_CSUM missing", patched(GOOD, 0, b"\x00"), -5),
    (23, "gso_size 0", patched(GOOD, 4, struct.pack("=H", 0)), -6),
    (24, "no payload", superframe(Seg(b""), 1000), -4),
    (25, "65 segments", superframe(Seg(payload(6500)), 100), -7),
    (26, "IPv6 version nibble 4", patched(GOOD6, IP, b"\x40"), -3),
    (27, "IPv6 next header not TCP", patched(GOOD6, IP + 6, b"\x00"), -3),
    (28, "IPv6 payload length wrong", patched(GOOD6, IP + 4, struct.pack("!H", 1)), -3),
    (
        29,
        "non-GSO csum_start beyond the packet",
        vnet(NEEDS_CSUM, 0, 0, 0, 200, 16) + GOOD[10:110],
        -5,
    ),
    (30, "non-GSO csum field past the end", vnet(NEEDS_CSUM, 0, 0, 0, 90, 9) + GOOD[10:110], -5),
    (
        31,
        "VLAN tag cut short",
        vnet(NEEDS_CSUM, GSO_TCPV4, 0, 1000, 18, 16) + DST_MAC + SRC_MAC + b"\x81\x00\x00",
        -1,
    ),
]


GRO_CASES = [
    ("v4", Seg(payload(14000)), 1388),
    ("v6", Seg(payload(14000), v6=True), 1368),
    ("v4-vlan-opts", Seg(payload(9000), vlan=42, tcp_opts=TS_OPTS), 1388),
    ("v6-vlan", Seg(payload(9000), v6=True, vlan=7), 1400),
    ("psh-last", Seg(payload(5000), flags=ACK | PSH), 1000),
    ("equal-sizes", Seg(payload(4000)), 1000),
    ("wrap", Seg(payload(6000), seq=2**32 - 2500, ident=0xFFFE), 1448),
]
