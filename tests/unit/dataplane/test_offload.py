"""TSO split and GRO coalesce (enclave/_fp_offload.pxi) against an independent Python model.

The model (tests/support/offload_frames.py) builds every frame from scratch with struct (headers,
lengths, checksums per RFC 791/793/8200 and RFC 1071), so a segment produced by the C code is
compared byte for byte with what a correct TCP stack would have put on the wire.
"""

from __future__ import annotations

import array
import struct
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.offload_cases import GOOD, GOOD6, GRO_CASES, REJECT_CASES, SPLIT_CASES
from tests.support.offload_frames import (
    ACK,
    CWR,
    DATA_VALID,
    DST4,
    DST_MAC,
    ECE,
    FIN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    NEEDS_CSUM,
    PLANS,
    PSH,
    RST,
    SRC4,
    SRC_MAC,
    SYN,
    TS_OPTS,
    URG,
    VNET,
    Seg,
    csum_sum,
    expected_segments,
    interleaved_frames,
    payload,
    pseudo,
    superframe,
    vnet,
)

fp = pytest.importorskip("enclave._fastpath")

def split_into(
    pkt: bytes,
    *,
    start: int = 0,
    headroom: int = 0,
    tailroom: int = 0,
    max_frame: int = 0,
    size: int | None = None,
) -> tuple[bytearray, list[int], list[int], int]:
    buf = bytearray(b"\xaa" * (size if size is not None else len(pkt) + 64 * 300))
    offs = array.array("I", [0] * 64)
    lens = array.array("I", [0] * 64)
    n = fp.tso_split_into(pkt, buf, offs, lens, start, headroom, tailroom, max_frame)
    return buf, list(offs[:n]), list(lens[:n]), n


# --- TSO split ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("seg", "mss"), [c[1:] for c in SPLIT_CASES], ids=[c[0] for c in SPLIT_CASES]
)
def test_split_matches_reference(seg: Seg, mss: int) -> None:
    got = fp.tso_split(superframe(seg, mss))
    want = expected_segments(seg, mss)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"segment {i} differs"
    hl = seg.headers_len()
    assert b"".join(g[hl:] for g in got) == seg.payload


def test_split_layout_headroom_tailroom_and_start() -> None:
    seg = Seg(payload(5000), v6=True)
    buf, offs, lens, n = split_into(superframe(seg, 1200), start=5, headroom=16, tailroom=16)
    want = expected_segments(seg, 1200)
    assert n == len(want) == 5
    pos = 5
    for i in range(n):
        assert offs[i] == pos
        assert lens[i] == len(want[i])
        assert bytes(buf[pos : pos + 16]) == b"\xaa" * 16, "headroom must be left alone"
        assert bytes(buf[pos + 16 : pos + 16 + lens[i]]) == want[i]
        tail = pos + 16 + lens[i]
        assert bytes(buf[tail : tail + 16]) == b"\xaa" * 16, "tailroom must be left alone"
        pos = tail + 16
    assert bytes(buf[:5]) == b"\xaa" * 5
    assert bytes(buf[pos:]) == b"\xaa" * (len(buf) - pos)


def test_split_max_frame_and_space() -> None:
    seg = Seg(payload(3000))
    pkt = superframe(seg, 1000)
    frame = seg.headers_len() + 1000
    assert len(fp.tso_split(pkt, max_frame=frame)) == 3
    with pytest.raises(fp.OffloadError) as ei:
        fp.tso_split(pkt, max_frame=frame - 1)
    assert ei.value.code == -8
    need = 3 * (frame - 1000 + 32) + 3000
    assert split_into(pkt, headroom=16, tailroom=16, size=need)[3] == 3
    with pytest.raises(fp.OffloadError) as ei:
        split_into(pkt, headroom=16, tailroom=16, size=need - 1)
    assert ei.value.code == -9
    with pytest.raises(fp.OffloadError) as ei:  # start beyond the buffer
        split_into(pkt, start=need + 1, size=need)
    assert ei.value.code == -10


def test_split_respects_caller_segment_limit() -> None:
    pkt = superframe(Seg(payload(3000)), 1000)
    buf = bytearray(10000)
    offs, lens = array.array("I", [0, 0]), array.array("I", [0, 0])
    with pytest.raises(fp.OffloadError) as ei:
        fp.tso_split_into(pkt, buf, offs, lens)
    assert ei.value.code == -7


def test_non_gso_frames_copied_and_partial_checksum_completed() -> None:
    arp = DST_MAC + SRC_MAC + b"\x08\x06" + bytes(range(28))
    assert fp.tso_split(vnet() + arp) == [arp]
    full = Seg(payload(300), flags=ACK | PSH)
    # a TCP frame the kernel left CHECKSUM_PARTIAL
    got = fp.tso_split(vnet(NEEDS_CSUM, GSO_NONE, 0, 0, full.l4(), 16) + full.build("partial"))
    assert got == [full.build()]
    # same over IPv6 + VLAN, and with Ethernet padding after a tiny IPv4 packet
    v6 = Seg(payload(11), v6=True, vlan=3)
    got = fp.tso_split(vnet(NEEDS_CSUM, GSO_NONE, 0, 0, v6.l4(), 16) + v6.build("partial"))
    assert got == [v6.build()]
    tiny = Seg(payload(1))
    padded = tiny.build("partial") + b"\0" * 5
    got = fp.tso_split(vnet(NEEDS_CSUM, GSO_NONE, 0, 0, tiny.l4(), 16) + padded)
    assert got == [tiny.build() + b"\0" * 5]
    # a UDP datagram (checksum at offset 6) with a partial checksum
    data = payload(99)
    udp = struct.pack("!HHHH", 53, 5353, 8 + len(data), 0) + data
    ps = csum_sum(pseudo(SRC4, DST4, len(udp), 17))
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, SRC4, DST4)
    ip = ip[:10] + struct.pack("!H", 0xFFFF ^ csum_sum(ip)) + ip[12:]
    eth = DST_MAC + SRC_MAC + b"\x08\x00"
    partial = eth + ip + udp[:6] + struct.pack("!H", ps) + udp[8:]
    [out] = fp.tso_split(vnet(NEEDS_CSUM, GSO_NONE, 0, 0, 34, 6) + partial)
    assert csum_sum(pseudo(SRC4, DST4, len(udp), 17) + out[34:]) == 0xFFFF
    assert out[:40] + out[42:] == partial[:40] + partial[42:]


@pytest.mark.parametrize(
    ("num", "why", "pkt", "code"), REJECT_CASES, ids=[f"{c[0]:02d}-{c[1]}" for c in REJECT_CASES]
)
def test_split_rejects_malformed(num: int, why: str, pkt: bytes, code: int) -> None:
    with pytest.raises(fp.OffloadError) as ei:
        fp.tso_split(pkt)
    assert ei.value.code == code, f"case {num} ({why}): {ei.value}"


def test_split_error_names() -> None:
    assert set(fp.OFFLOAD_ERRORS) == set(range(-10, 0))
    err = fp.OffloadError(-7)
    assert isinstance(err, ValueError) and "too_many_segments" in str(err)


def parse_ok(frame: bytes) -> tuple[int, int]:
    """(L4 offset, payload offset) of a frame the model considers valid TCP with valid
    checksums; asserts on anything else."""
    l2 = 18 if frame[12:14] == b"\x81\x00" else 14
    et = frame[l2 - 2 : l2]
    if et == b"\x08\x00":
        ihl = (frame[l2] & 15) * 4
        assert csum_sum(frame[l2 : l2 + ihl]) == 0xFFFF, "IPv4 header checksum"
        assert struct.unpack("!H", frame[l2 + 2 : l2 + 4])[0] == len(frame) - l2
        src, dst, l4 = frame[l2 + 12 : l2 + 16], frame[l2 + 16 : l2 + 20], l2 + ihl
    else:
        assert et == b"\x86\xdd"
        assert struct.unpack("!H", frame[l2 + 4 : l2 + 6])[0] == len(frame) - l2 - 40
        src, dst, l4 = frame[l2 + 8 : l2 + 24], frame[l2 + 24 : l2 + 40], l2 + 40
    assert csum_sum(pseudo(src, dst, len(frame) - l4) + frame[l4:]) == 0xFFFF, "TCP checksum"
    return l4, l4 + (frame[l4 + 12] >> 4) * 4


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_split_random_bytes(data: bytes) -> None:
    try:
        out = fp.tso_split(data)
    except fp.OffloadError as exc:
        assert exc.code in fp.OFFLOAD_ERRORS
        return
    assert len(out) >= 1


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([GOOD, GOOD6, superframe(Seg(payload(3000), vlan=9, tcp_opts=TS_OPTS), 700)]),
    st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(0, 40),
)
def test_fuzz_split_mutated_superframes(
    base: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    pkt = bytearray(base)
    for at, val in edits:
        pkt[at % len(pkt)] = val
    pkt = pkt[: len(pkt) - cut]
    try:
        out = fp.tso_split(bytes(pkt))
    except fp.OffloadError as exc:
        assert exc.code in fp.OFFLOAD_ERRORS
        return
    if pkt[1] in (GSO_TCPV4, GSO_TCPV6):
        # a super-frame that is accepted yields valid, equal-sized segments of its payload
        joined = b""
        for frame in out:
            _l4, data_at = parse_ok(frame)
            joined += frame[data_at:]
        hdr = out[0][:data_at]
        assert joined == bytes(pkt[10 + len(hdr) :])


# --- GRO coalesce ------------------------------------------------------------------------------


def hdr(out: bytes) -> tuple[int, int, int, int, int, int]:
    return struct.unpack_from(VNET, out)


def coalesced_reference(s: Seg, mss: int) -> bytes:
    """The super-frame GRO must produce for the segments of s (virtio contract)."""
    return superframe(s, mss)


@pytest.mark.parametrize(("seg", "mss"), [c[1:] for c in GRO_CASES], ids=[c[0] for c in GRO_CASES])
def test_gro_rebuilds_the_superframe(seg: Seg, mss: int) -> None:
    segs = expected_segments(seg, mss)
    out = fp.gro_coalesce(segs)
    assert out == [coalesced_reference(seg, mss)]
    # and the split of the coalesced frame gives back the original segments
    assert fp.tso_split(out[0]) == segs


def test_gro_single_and_non_candidates_pass_through() -> None:
    one = Seg(payload(500)).build()
    cases = {
        "syn": replace(Seg(b""), flags=SYN).build(),
        "fin": Seg(payload(10), flags=ACK | FIN).build(),
        "rst": Seg(b"", flags=RST | ACK).build(),
        "urg": Seg(payload(10), flags=ACK | URG).build(),
        "cwr": Seg(payload(10), flags=ACK | CWR).build(),
        "pure-ack": Seg(b"").build(),
        "ip-options": Seg(payload(10), ip_opts=bytes([1, 1, 1, 0])).build(),
        "padded": Seg(payload(1)).build() + b"\0" * 5,
        "arp": DST_MAC + SRC_MAC + b"\x08\x06" + bytes(28),
    }
    out = fp.gro_coalesce([one])
    assert out == [vnet(DATA_VALID) + one]
    for name, frame in cases.items():
        assert fp.gro_coalesce([frame]) == [vnet() + frame], name


def test_gro_bad_checksum_breaks_the_run_and_is_not_marked_valid() -> None:
    s = Seg(payload(6000))
    segs = expected_segments(s, 1000)
    bad = replace(s, payload=s.payload[2000:3000], seq=s.seq + 2000, ident=s.ident + 2).build("bad")
    frames = [*segs[:2], bad, *segs[3:]]
    out = fp.gro_coalesce(frames)
    assert len(out) == 3
    assert out[0] == superframe(replace(s, payload=s.payload[:2000]), 1000)
    assert out[1] == vnet() + bad
    assert hdr(out[2])[:2] == (NEEDS_CSUM, GSO_TCPV4)
    assert fp.tso_split(out[2]) == segs[3:]
    # without verification the run is merged whatever the checksums say
    merged = fp.gro_coalesce(frames, verify=False)
    assert len(merged) == 1 and hdr(merged[0])[1] == GSO_TCPV4


def test_gro_interleaved_flows_keep_per_flow_order() -> None:
    a = Seg(payload(4000, 1))
    b = Seg(payload(3000, 2), sport=40001, v6=False)
    sa, sb = expected_segments(a, 1000), expected_segments(b, 1000)
    udp_like = DST_MAC + SRC_MAC + b"\x08\x06" + bytes(28)
    frames = [sa[0], sb[0], sa[1], udp_like, sb[1], sa[2], sa[3], sb[2]]
    out = fp.gro_coalesce(frames)
    assert out == [superframe(a, 1000), superframe(b, 1000), vnet() + udp_like]


@pytest.mark.parametrize(
    ("why", "second"),
    [
        ("seq gap", lambda s: replace(s, seq=s.seq + 1001)),
        ("different ack", lambda s: replace(s, ack=78)),
        ("different window", lambda s: replace(s, window=1)),
        ("different ttl", lambda s: replace(s, ttl=63)),
        ("different tos", lambda s: replace(s, tos=4)),
        ("different options", lambda s: replace(s, tcp_opts=TS_OPTS[:-1] + b"\x01")),
        ("ece only on one", lambda s: replace(s, flags=ACK | ECE)),
        ("larger after smaller", lambda s: replace(s, payload=payload(1001))),
    ],
)
def test_gro_does_not_merge_mismatches(why: str, second: Callable[[Seg], Seg]) -> None:
    first = Seg(payload(1000), tcp_opts=TS_OPTS)
    nxt = replace(first, seq=first.seq + 1000, ident=first.ident + 1, payload=payload(1000, 3))
    nxt = second(nxt)
    frames = [first.build(), nxt.build()]
    out = fp.gro_coalesce(frames)
    assert out == [vnet(DATA_VALID) + f for f in frames], why


def test_gro_small_or_psh_segment_ends_a_run() -> None:
    s = Seg(payload(1000))
    f0 = s.build()
    f1 = replace(s, seq=s.seq + 1000, ident=s.ident + 1, payload=payload(500)).build()
    f2 = replace(s, seq=s.seq + 1500, ident=s.ident + 2).build()
    out = fp.gro_coalesce([f0, f1, f2])
    assert len(out) == 2
    assert fp.tso_split(out[0]) == [f0, f1]
    assert out[1] == vnet(DATA_VALID) + f2
    p1 = replace(s, seq=s.seq + 1000, ident=s.ident + 1, flags=ACK | PSH).build()
    p2 = replace(s, seq=s.seq + 2000, ident=s.ident + 2).build()
    out = fp.gro_coalesce([f0, p1, p2])
    assert len(out) == 2 and fp.tso_split(out[0]) == [f0, p1]
    assert hdr(out[0])[3] == 1000 and out[0][10 + 34 + 13] == ACK | PSH


def test_gro_limits_64_segments_and_64k() -> None:
    s = Seg(payload(65 * 100))
    segs = expected_segments(s, 100)
    out = fp.gro_coalesce(segs)
    assert len(out) == 2
    assert fp.tso_split(out[0]) == segs[:64]
    assert out[1] == vnet(DATA_VALID) + segs[64]
    big = Seg(payload(50 * 1448))
    segs = expected_segments(big, 1448)
    out = fp.gro_coalesce(segs)
    first = fp.tso_split(out[0])
    assert len(first) == 45  # 40 + 45 * 1448 = 65200 <= 65535 < 40 + 46 * 1448
    assert len(out[0]) - 10 - 14 <= 65535
    assert [f for o in out for f in fp.tso_split(o)] == segs


def test_gro_arena_too_small_falls_back_to_single_frames() -> None:
    s = Seg(payload(3000))
    segs = expected_segments(s, 1000)
    for size in (0, 100, 10 + 54 + 3000 - 1):
        out = fp.gro_coalesce(segs, arena_size=size)
        assert out == [vnet(DATA_VALID) + f for f in segs]
    out = fp.gro_coalesce(segs, arena_size=10 + 54 + 3000)
    assert out == [superframe(s, 1000)]


def test_gro_rejects_bad_arguments() -> None:
    with pytest.raises(fp.OffloadError):
        fp.gro_coalesce([b"x"] * (fp.GRO_MAX_FRAMES + 1))
    assert fp.gro_coalesce([]) == []
    buf, arena = bytearray(100), bytearray(100)
    offs, lens = array.array("I", [0]), array.array("I", [50])
    with pytest.raises(fp.OffloadError):  # headroom must hold a virtio header
        fp.gro_coalesce_into(buf, offs, lens, 9, arena)
    with pytest.raises(ValueError, match="exceeds"):
        fp.gro_coalesce_into(buf, offs, array.array("I", [91]), 10, arena)
    with pytest.raises(ValueError, match="exceeds"):
        fp.gro_coalesce_into(buf, array.array("I", [101]), array.array("I", [0]), 10, arena)


def test_gro_into_writes_virtio_headers_in_place() -> None:
    s = Seg(payload(2000))
    segs = expected_segments(s, 1000)
    lone = Seg(payload(10), sport=1).build()
    frames = [*segs, lone]
    headroom = 16
    buf = bytearray(b"\xee" * 4000)
    offs, lens, pos = array.array("I"), array.array("I"), 3
    for f in frames:
        offs.append(pos)
        lens.append(len(f))
        buf[pos + headroom : pos + headroom + len(f)] = f
        pos += headroom + len(f) + 16
    arena = bytearray(5000)
    spans = fp.gro_coalesce_into(buf, offs, lens, headroom, arena)
    assert spans == [(1, 0, 10 + 54 + 2000), (0, offs[2] + headroom - 10, 10 + len(lone))]
    assert bytes(arena[: spans[0][2]]) == superframe(s, 1000)
    assert bytes(buf[spans[1][1] : spans[1][1] + spans[1][2]]) == vnet(DATA_VALID) + lone
    assert bytes(buf[offs[2] : offs[2] + 6]) == b"\xee" * 6  # rest of the headroom untouched


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    PLANS,
    st.data(),
)
def test_fuzz_gro_then_split_is_identity_per_flow(
    plan: list[tuple[int, int, bool, bool]], data: st.DataObject
) -> None:
    """Any interleaving of valid segments (random sizes, PSH, occasional bad checksums):
    splitting every GRO output gives back each flow's frames in order, checksums repaired
    only where GRO vouched for them."""
    frames, flow_of = interleaved_frames(plan)
    out = fp.gro_coalesce(frames)
    assert len(out) <= len(frames)
    got: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
    for o in out:
        h = hdr(o)
        pieces = fp.tso_split(o)
        if h[1] == GSO_NONE:
            assert h[0] in (0, DATA_VALID) and len(pieces) == 1
        # which flow: by source port
        l2 = 18 if o[10 + 12 : 10 + 14] == b"\x81\x00" else 14
        l4 = 10 + l2 + (40 if o[10 + l2 - 2 : 10 + l2] == b"\x86\xdd" else 20)
        sport = struct.unpack("!H", o[l4 : l4 + 2])[0]
        got[sport - 1000].extend(pieces)
    for flow in range(3):
        assert got[flow] == [f for f, fl in zip(frames, flow_of, strict=True) if fl == flow]
