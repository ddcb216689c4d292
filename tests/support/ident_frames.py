"""Hand-built Ethernet frames for the identity-binding tests (no scapy): ARP, IPv4/UDP,
IPv6 with extension headers, ICMPv6 neighbour messages, VLAN tags; and `guarded`, which puts
a frame right in front of an inaccessible page so a parser that reads past its end crashes.

    eth(dst, src, type, payload, tags)   [dst 6][src 6]([0x8100|0x88a8 TCI]...)[type 2][payload]
    arp(op, sha, spa, tha, tpa)          [htype 2][ptype 2][hlen][plen][op 2][sha][spa][tha][tpa]
    ipv4(src, dst, proto, payload)       20-byte header, checksum 0 (nothing here checks it)
    ipv6(src, dst, nh, payload)          40-byte header, payload length from the payload
"""

from __future__ import annotations

import ctypes
import ipaddress
import mmap
import struct

BROADCAST = b"\xff" * 6
ETH_ARP = 0x0806
ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN = 0x8100
ETH_QINQ = 0x88A8
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
IP6_HOPOPTS = 0
IP6_FRAGMENT = 44
ND_NS = 135
ND_NA = 136
ND_OPT_SLLA = 1
ND_OPT_TLLA = 2


def eth(dst: bytes, src: bytes, ethertype: int, payload: bytes,
        tags: tuple[int, ...] = ()) -> bytes:
    """An Ethernet frame; each tag (TPID) adds a 4-byte VLAN tag (VID 7) before the type."""
    head = dst + src
    for tpid in tags:
        head += struct.pack("!HH", tpid, 7)
    return head + struct.pack("!H", ethertype) + payload


def arp(op: int, sha: bytes, spa: str, tha: bytes, tpa: str, *, htype: int = 1,
        ptype: int = ETH_IPV4) -> bytes:
    return (struct.pack("!HHBBH", htype, ptype, 6, 4, op) + sha
            + ipaddress.IPv4Address(spa).packed + tha + ipaddress.IPv4Address(tpa).packed)


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def ipv4(src: str, dst: str, proto: int, payload: bytes, *, frag: int = 0) -> bytes:
    """frag: the 16-bit flags + fragment offset field (offset in 8-byte units)."""
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, frag, 64, proto, 0,
                       ipaddress.IPv4Address(src).packed,
                       ipaddress.IPv4Address(dst).packed) + payload


def ipv6(src: str, dst: str, nh: int, payload: bytes, *, plen: int | None = None) -> bytes:
    length = len(payload) if plen is None else plen
    return (struct.pack("!IHBB", 6 << 28, length, nh, 255) + ipaddress.IPv6Address(src).packed
            + ipaddress.IPv6Address(dst).packed + payload)


def hop_by_hop(nh: int, payload: bytes) -> bytes:
    """An 8-byte hop-by-hop options header (PadN) in front of payload."""
    return struct.pack("!BBBB", nh, 0, 1, 4) + bytes(4) + payload


def fragment(nh: int, payload: bytes, *, offset: int = 0, more: bool = False) -> bytes:
    """An IPv6 fragment header (offset in 8-byte units)."""
    return struct.pack("!BBHI", nh, 0, (offset << 3) | int(more), 0x1234) + payload


def nd_option(kind: int, mac: bytes) -> bytes:
    return struct.pack("!BB", kind, 1) + mac


def icmp6_na(target: str, *options: bytes) -> bytes:
    """Neighbour Advertisement (solicited + override) for target, with options."""
    return (struct.pack("!BBHI", ND_NA, 0, 0, 0x60000000)
            + ipaddress.IPv6Address(target).packed + b"".join(options))


def icmp6_ns(target: str, *options: bytes) -> bytes:
    return (struct.pack("!BBHI", ND_NS, 0, 0, 0) + ipaddress.IPv6Address(target).packed
            + b"".join(options))


def link_local(mac: bytes) -> str:
    """fe80::/64 + modified EUI-64 of mac (RFC 4291 2.5.1), as Linux's addr_gen_mode 0."""
    iid = bytes([mac[0] ^ 0x02, mac[1], mac[2], 0xFF, 0xFE, mac[3], mac[4], mac[5]])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + iid))


def solicited_node(addr: str) -> str:
    low = ipaddress.IPv6Address(addr).packed[13:]
    return str(ipaddress.IPv6Address(bytes.fromhex("ff02" + "00" * 9 + "01ff") + low))


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
PROT_NONE = 0


class Guarded:
    """Two pages, the second made inaccessible: `place(frame)` copies frame to the end of the
    first page and returns a view of exactly it, so one byte read past it is a SIGSEGV."""

    def __init__(self) -> None:
        self.page = mmap.PAGESIZE
        self.map = mmap.mmap(-1, 2 * self.page)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        if _libc.mprotect(addr + self.page, self.page, PROT_NONE) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")

    def place(self, frame: bytes) -> memoryview:
        if len(frame) > self.page:
            raise ValueError("frame larger than a page")
        start = self.page - len(frame)
        self.map[start:self.page] = frame
        return memoryview(self.map)[start:self.page]
