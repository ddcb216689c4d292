"""The reference model for the TSO/GRO tests: every TCP/IP frame built from scratch with struct
(headers, lengths, checksums per RFC 791/793/8200 and RFC 1071), so what the C code
(enclave/_fp_offload.pxi) produces is compared byte for byte with what a correct TCP stack would
have put on the wire.  Used by tests/unit/test_offload*.py and the data plane's TSO seal test.

    superframe(seg, mss)         what a vnet_hdr TAP hands us for a TSO send of seg.payload
    expected_segments(seg, mss)  the segments a correct TSO engine makes of it
    interleaved_frames(plan)     segments of three FLOWS interleaved (GRO input)
    PLANS                        the hypothesis strategy for such plans

Pure: no extension import here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from hypothesis import strategies as st

VNET = "=BBHHHH"
NEEDS_CSUM, DATA_VALID = 1, 2
GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6, GSO_UDP_L4 = 0, 1, 3, 4, 5
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
SRC_MAC, DST_MAC = bytes.fromhex("02aabbccdd01"), bytes.fromhex("02aabbccdd02")
SRC4, DST4 = bytes([100, 64, 0, 1]), bytes([100, 64, 0, 2])
SRC6 = bytes.fromhex("fd00000000000000000000000000000a")
DST6 = bytes.fromhex("fd00000000000000000000000000000b")
TS_OPTS = bytes([1, 1, 8, 10]) + struct.pack("!II", 123456, 654321)  # NOP NOP timestamps



def csum_sum(data: bytes) -> int:
    """RFC 1071 one's-complement sum of 16-bit big-endian words, folded."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def pseudo(src: bytes, dst: bytes, l4len: int, proto: int = 6) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, l4len)
    return src + dst + struct.pack("!IxxxB", l4len, proto)


@dataclass(frozen=True)
class Seg:
    """One TCP/IP frame's parameters; build() renders it."""

    payload: bytes
    v6: bool = False
    vlan: int | None = None
    seq: int = 1000
    ack: int = 77
    ident: int = 0x1234
    flags: int = ACK
    window: int = 502
    ttl: int = 64
    tos: int = 0
    ip_opts: bytes = b""
    tcp_opts: bytes = b""
    sport: int = 40000
    dport: int = 5201

    def headers_len(self) -> int:
        l2 = 18 if self.vlan is not None else 14
        return l2 + (40 if self.v6 else 20 + len(self.ip_opts)) + 20 + len(self.tcp_opts)

    def build(self, csum: str = "full") -> bytes:
        """csum: "full" (valid TCP checksum), "partial" (pseudo-header sum, as in
        CHECKSUM_PARTIAL), "bad" (full checksum + 1)."""
        if self.vlan is None:
            eth = DST_MAC + SRC_MAC + struct.pack("!H", 0x86DD if self.v6 else 0x0800)
        else:
            eth = (
                DST_MAC
                + SRC_MAC
                + struct.pack("!HHH", 0x8100, self.vlan, 0x86DD if self.v6 else 0x0800)
            )
        doff = (20 + len(self.tcp_opts)) // 4
        tcp = struct.pack(
            "!HHIIBBHHH",
            self.sport,
            self.dport,
            self.seq % 2**32,
            self.ack,
            doff << 4,
            self.flags,
            self.window,
            0,
            0,
        )
        tcp += self.tcp_opts
        seg = tcp + self.payload
        src, dst = (SRC6, DST6) if self.v6 else (SRC4, DST4)
        ps = csum_sum(pseudo(src, dst, len(seg)))
        if csum == "partial":
            check = ps
        else:
            check = 0xFFFF ^ csum_sum(pseudo(src, dst, len(seg)) + seg)
            if csum == "bad":
                check = (check + 1) & 0xFFFF
        seg = seg[:16] + struct.pack("!H", check) + seg[18:]
        if self.v6:
            ip = struct.pack("!IHBB", (6 << 28) | (self.tos << 20) | 0x12345, len(seg), 6, self.ttl)
            ip += src + dst
        else:
            ihl = (20 + len(self.ip_opts)) // 4
            ip = struct.pack(
                "!BBHHHBBH4s4s",
                0x40 | ihl,
                self.tos,
                ihl * 4 + len(seg),
                self.ident % 65536,
                0x4000,
                self.ttl,
                6,
                0,
                src,
                dst,
            )
            ip += self.ip_opts
            ip = ip[:10] + struct.pack("!H", 0xFFFF ^ csum_sum(ip)) + ip[12:]
        return eth + ip + seg

    def l4(self) -> int:
        return self.headers_len() - 20 - len(self.tcp_opts)


def vnet(
    flags: int = 0, gso: int = 0, hdr_len: int = 0, size: int = 0, cs: int = 0, co: int = 0
) -> bytes:
    return struct.pack(VNET, flags, gso, hdr_len, size, cs, co)


def superframe(s: Seg, mss: int) -> bytes:
    """What a vnet_hdr TAP hands us for a TSO send of s.payload with this MSS."""
    gso = GSO_TCPV6 if s.v6 else GSO_TCPV4
    return vnet(NEEDS_CSUM, gso, s.headers_len(), mss, s.l4(), 16) + s.build("partial")


def expected_segments(s: Seg, mss: int) -> list[bytes]:
    """The segments a correct TSO engine produces, each built from scratch."""
    chunks = [s.payload[i : i + mss] for i in range(0, len(s.payload), mss)]
    out = []
    for i, chunk in enumerate(chunks):
        flags = s.flags
        if i < len(chunks) - 1:
            flags &= ~(FIN | PSH)
        if i > 0:
            flags &= ~CWR
        out.append(
            replace(s, payload=chunk, seq=s.seq + i * mss, ident=s.ident + i, flags=flags).build()
        )
    return out


def payload(n: int, salt: int = 0) -> bytes:
    return bytes((i * 7 + salt) & 0xFF for i in range(n))


FLOWS = [
    Seg(b"", sport=1000),
    Seg(b"", sport=1001, v6=True),
    Seg(b"", sport=1002, vlan=5, tcp_opts=TS_OPTS),
]


# plans for interleaved_frames: (flow, payload size, PSH, bad), 1 to 80 of them
PLANS = st.lists(
    st.tuples(st.integers(0, 2), st.integers(1, 1500), st.booleans(), st.booleans()),
    min_size=1,
    max_size=80,
)


def interleaved_frames(plan: list[tuple[int, int, bool, bool]]) -> tuple[list[bytes], list[int]]:
    """Each plan entry (flow, payload size, PSH, bad) appends that flow's next in-order segment,
    with a bad checksum when `bad` and the size is a multiple of 7; (frames, flow of each)."""
    seq = [5000, 9000, 2**32 - 3000]
    ident = [1, 65530, 7]
    frames: list[bytes] = []
    flow_of: list[int] = []
    for flow, size, psh, bad in plan:
        s = replace(
            FLOWS[flow],
            payload=payload(size, flow),
            seq=seq[flow],
            ident=ident[flow],
            flags=ACK | (PSH if psh else 0),
        )
        frames.append(s.build("bad" if bad and size % 7 == 0 else "full"))
        flow_of.append(flow)
        seq[flow] += size
        ident[flow] += 1
    return frames, flow_of
