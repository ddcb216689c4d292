"""TSO split and GRO coalesce of one ~64 KB TCP super-frame (enclave/_fp_offload.pxi).

    python -m pytest bench/test_offload_bench.py --benchmark-enable  # Gbit/s in extra_info
    python -m pytest bench/test_offload_bench.py                     # correctness smoke only

The super-frame is what a vnet_hdr TAP with TSO hands the data plane for a 1406-byte overlay
MTU: 47 segments x 1366 bytes of TCP payload (IPv4, no options), 64,202 payload bytes.
Split writes into a batch buffer with 16 bytes of headroom and tailroom per frame (the AEAD
layout); coalesce reads 47 decrypted frames laid out the same way.
"""

from __future__ import annotations

import struct
from array import array
from typing import Any

import pytest

from tests.support.offload_frames import csum_sum, pseudo

fp = pytest.importorskip("enclave._fastpath")

MSS = 1366
SEGS = 47
HEADROOM = TAILROOM = 16
HDR = 14 + 20 + 20


def _frame(payload: bytes, seq: int, ident: int, partial: bool) -> bytes:
    src, dst = bytes([100, 64, 0, 1]), bytes([100, 64, 0, 2])
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, seq, 1, 0x50, 0x10, 502, 0, 0) + payload
    ps = pseudo(src, dst, len(tcp))
    check = csum_sum(ps) if partial else 0xFFFF ^ csum_sum(ps + tcp)
    tcp = tcp[:16] + struct.pack("!H", check) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), ident, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", 0xFFFF ^ csum_sum(ip)) + ip[12:]
    return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + tcp


PAYLOAD = bytes((i * 31 + 7) & 0xFF for i in range(SEGS * MSS))
SUPER = struct.pack("=BBHHHH", 1, 1, HDR, MSS, 34, 16) + _frame(PAYLOAD, 1000, 1, True)
SEGMENTS = [
    _frame(PAYLOAD[i * MSS : (i + 1) * MSS], 1000 + i * MSS, 1 + i, False) for i in range(SEGS)
]


def _gbits(benchmark: Any) -> None:
    stats = getattr(benchmark, "stats", None)
    mean = stats.stats.mean if stats is not None else None
    if mean:
        benchmark.extra_info["gbit_s"] = round(len(PAYLOAD) * 8 / mean / 1e9, 3)
        benchmark.extra_info["superframes_per_s"] = round(1 / mean)
    benchmark.extra_info["payload_bytes"] = len(PAYLOAD)
    benchmark.extra_info["segments"] = SEGS


def test_bench_tso_split_64k(benchmark: Any) -> None:
    buf = bytearray(SEGS * (HEADROOM + TAILROOM + HDR) + len(PAYLOAD))
    offs = array("I", [0] * fp.TSO_MAX_SEGS)
    lens = array("I", [0] * fp.TSO_MAX_SEGS)
    benchmark.group = "offload 64KB"
    n = benchmark(fp.tso_split_into, SUPER, buf, offs, lens, 0, HEADROOM, TAILROOM, HDR + MSS)
    assert n == SEGS
    for i in (0, SEGS - 1):
        got = bytes(buf[offs[i] + HEADROOM : offs[i] + HEADROOM + lens[i]])
        assert got == SEGMENTS[i]
    _gbits(benchmark)


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "trust"])
def test_bench_gro_coalesce_64k(benchmark: Any, verify: bool) -> None:
    buf = bytearray(SEGS * (HEADROOM + HDR + MSS + TAILROOM))
    offs, lens = array("I"), array("I")
    for i, f in enumerate(SEGMENTS):
        at = i * (HEADROOM + HDR + MSS + TAILROOM)
        buf[at + HEADROOM : at + HEADROOM + len(f)] = f
        offs.append(at)
        lens.append(len(f))
    arena = bytearray(10 + HDR + len(PAYLOAD))
    benchmark.group = "offload 64KB"
    spans = benchmark(fp.gro_coalesce_into, buf, offs, lens, HEADROOM, arena, verify)
    assert spans == [(1, 0, len(arena))]
    assert bytes(arena) == SUPER
    _gbits(benchmark)
