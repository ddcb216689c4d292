"""ECN marking in place of an AQM drop (fp_ecn_mark, enclave/_fp_aqm.pxi): CE on ECT(0) /
ECT(1) IPv4 (header checksum still valid) and IPv6 (traffic class), refusal on anything else."""

from __future__ import annotations

import struct

import pytest

from enclave import _fastpath as fp

ETH4 = bytes(6) + bytes.fromhex("020000000001") + b"\x08\x00"
ETH6 = bytes(6) + bytes.fromhex("020000000001") + b"\x86\xdd"


def csum(data: bytes) -> int:
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(tos: int, ttl: int = 64) -> bytes:
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, 40, 0x1234, 0x4000, ttl, 6, 0,
                                bytes([100, 64, 0, 1]), bytes([100, 64, 0, 2])))
    hdr[10:12] = struct.pack("!H", csum(bytes(hdr)))
    return bytes(hdr) + bytes(20)


def ipv6(tclass: int) -> bytes:
    first = (6 << 28) | (tclass << 20) | 0xABCDE
    return struct.pack("!IHBB", first, 20, 6, 64) + bytes(16) + bytes(16) + bytes(20)


@pytest.mark.parametrize("dscp", [0, 0x2E, 0x3F])
@pytest.mark.parametrize("ect", [1, 2, 3])
def test_ipv4_ect_gets_ce_and_a_valid_checksum(dscp: int, ect: int) -> None:
    for ttl in (1, 64, 255):
        frame = bytearray(ETH4 + ipv4((dscp << 2) | ect, ttl))
        assert fp.ecn_mark(frame)
        ip = bytes(frame[14:34])
        assert ip[1] == (dscp << 2) | 3          # DSCP kept, CE set
        assert csum(ip) == 0                     # the header checksum still verifies
        assert frame[34:] == bytes(20)


def test_ipv4_not_ect_is_refused_and_untouched() -> None:
    frame = bytearray(ETH4 + ipv4(0xB8))
    before = bytes(frame)
    assert not fp.ecn_mark(frame)
    assert bytes(frame) == before


@pytest.mark.parametrize("ect", [1, 2, 3])
def test_ipv6_ect_gets_ce_in_the_traffic_class(ect: int) -> None:
    frame = bytearray(ETH6 + ipv6((0x2E << 2) | ect))
    assert fp.ecn_mark(frame)
    first = struct.unpack("!I", frame[14:18])[0]
    assert (first >> 28) == 6
    assert (first >> 20) & 0xFF == (0x2E << 2) | 3
    assert first & 0xFFFFF == 0xABCDE            # the flow label is untouched


def test_ipv6_not_ect_is_refused() -> None:
    frame = bytearray(ETH6 + ipv6(0x2E << 2))
    before = bytes(frame)
    assert not fp.ecn_mark(frame)
    assert bytes(frame) == before


def test_vlan_tagged_ipv4_is_marked() -> None:
    tagged = ETH4[:12] + b"\x81\x00\x00\x05" + b"\x08\x00" + ipv4(2)
    frame = bytearray(tagged)
    assert fp.ecn_mark(frame)
    assert frame[19] == 3 and csum(bytes(frame[18:38])) == 0


@pytest.mark.parametrize("raw", [
    b"",
    ETH4,                                        # IPv4 EtherType, no header
    ETH4 + ipv4(2)[:19],                         # cut header
    ETH6 + ipv6(2)[:39],
    ETH4[:12] + b"\x08\x06" + bytes(28),         # ARP
    ETH4[:12] + b"\x86\xdd" + ipv4(2),           # IPv6 EtherType, version 4 inside
    ETH4[:12] + b"\x81\x00",                     # a cut VLAN tag
])
def test_not_markable_frames_are_refused_untouched(raw: bytes) -> None:
    frame = bytearray(raw)
    assert not fp.ecn_mark(frame)
    assert bytes(frame) == raw
