"""Zero-copy variants of TSO split and GRO coalesce (enclave/_fp_offload.pxi) that the data
plane uses: fo_tso_inplace/fo_tso_next (segments made in the TAP read buffer, sealed straight
into the datagram) and fo_gro_iov (a run written with writev from where it was decrypted).

Each must give byte for byte what the copying functions give (those are checked against an
independent model, tests/support/offload_frames.py, in test_offload.py), for good input, rejected
input and fuzzed input; the shared case tables are in tests/support/offload_cases.py.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.offload_cases import GOOD, GOOD6, GRO_CASES, REJECT_CASES, SPLIT_CASES
from tests.support.offload_frames import (
    PLANS,
    TS_OPTS,
    Seg,
    expected_segments,
    interleaved_frames,
    payload,
    superframe,
)

fp = pytest.importorskip("enclave._fastpath")


def split_both(pkt: bytes, max_frame: int = 0) -> tuple[object, object]:
    """(tso_split result or error code, tso_split_inplace result or error code)."""
    res: list[object] = []
    for fn in (fp.tso_split, fp.tso_split_inplace):
        arg = bytearray(pkt) if fn is fp.tso_split_inplace else pkt
        try:
            res.append(fn(arg, max_frame))
        except fp.OffloadError as exc:
            res.append(exc.code)
    return res[0], res[1]


@pytest.mark.parametrize(
    ("seg", "mss"), [c[1:] for c in SPLIT_CASES], ids=[c[0] for c in SPLIT_CASES]
)
def test_inplace_split_equals_split(seg: Seg, mss: int) -> None:
    pkt = superframe(seg, mss)
    copied, inplace = split_both(pkt)
    assert inplace == copied == expected_segments(seg, mss)


@pytest.mark.parametrize(
    ("num", "why", "pkt", "code"), REJECT_CASES, ids=[f"{c[0]:02d}-{c[1]}" for c in REJECT_CASES]
)
def test_inplace_split_rejects_like_split(num: int, why: str, pkt: bytes, code: int) -> None:
    assert split_both(pkt) == (code, code), f"case {num} ({why})"


def test_inplace_split_max_frame_and_non_gso() -> None:
    pkt = superframe(Seg(payload(3000)), 1000)
    frame = len(expected_segments(Seg(payload(3000)), 1000)[0])
    assert split_both(pkt, frame)[1] == expected_segments(Seg(payload(3000)), 1000)
    assert split_both(pkt, frame - 1) == (-8, -8)
    full = Seg(payload(100))
    # NEEDS_CSUM without GSO: the checksum is completed where the frame lies
    partial = bytes([1, 0, 0, 0, 0, 0, full.l4(), 0, 16, 0]) + full.build("partial")
    assert split_both(partial) == ([full.build()], [full.build()])
    assert split_both(bytes(10) + b"\x01" * 60) == ([b"\x01" * 60], [b"\x01" * 60])
    with pytest.raises(fp.OffloadError):
        fp.tso_split_inplace(bytearray())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([GOOD, GOOD6, superframe(Seg(payload(3000), vlan=9, tcp_opts=TS_OPTS), 700)]),
    st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(0, 40),
    st.sampled_from([0, 700, 1514]),
)
def test_fuzz_inplace_split_equals_split(
    base: bytes, edits: list[tuple[int, int]], cut: int, max_frame: int
) -> None:
    pkt = bytearray(base)
    for at, val in edits:
        pkt[at % len(pkt)] = val
    pkt = pkt[: len(pkt) - cut]
    copied, inplace = split_both(bytes(pkt), max_frame)
    assert inplace == copied


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_inplace_split_random_bytes(data: bytes) -> None:
    copied, inplace = split_both(data)
    assert inplace == copied


# --- GRO with iovecs -----------------------------------------------------------------------------


@pytest.mark.parametrize(("seg", "mss"), [c[1:] for c in GRO_CASES], ids=[c[0] for c in GRO_CASES])
def test_gro_iov_equals_gro(seg: Seg, mss: int) -> None:
    segs = expected_segments(seg, mss)
    assert fp.gro_coalesce_iov(segs) == fp.gro_coalesce(segs) == [superframe(seg, mss)]


def test_gro_iov_pass_through_bad_checksum_and_limits() -> None:
    s = Seg(payload(64 * 1000 + 500))
    segs = expected_segments(s, 1000)
    assert fp.gro_coalesce_iov(segs) == fp.gro_coalesce(segs)
    assert len(fp.gro_coalesce_iov(segs)) == 2  # 64 segments per run
    bad = list(expected_segments(Seg(payload(5000)), 1000))
    bad[2] = replace(Seg(payload(5000)[2000:3000]), seq=3000, ident=0x1236).build("bad")
    for verify in (True, False):
        assert fp.gro_coalesce_iov(bad, verify) == fp.gro_coalesce(bad, verify)
    assert fp.gro_coalesce_iov([]) == []
    assert fp.gro_coalesce_iov([b"\x01" * 60]) == fp.gro_coalesce([b"\x01" * 60])
    with pytest.raises(fp.OffloadError):
        fp.gro_coalesce_iov([b"x"] * (fp.GRO_MAX_FRAMES + 1))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    PLANS,
    st.booleans(),
)
def test_fuzz_gro_iov_equals_gro(plan: list[tuple[int, int, bool, bool]], verify: bool) -> None:
    frames, _ = interleaved_frames(plan)
    assert fp.gro_coalesce_iov(frames, verify) == fp.gro_coalesce(frames, verify)
