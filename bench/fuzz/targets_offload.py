"""Fuzz targets of the compiled fast path's frame parsers: virtio header + TSO super-frame, GRO,
and the identity binding of a peer's decrypted frames.

    offload   enclave._fastpath (the entry points tests/unit/dataplane/test_offload*.py use):
              tso_split, tso_split_inplace (the data plane's in-place split) and tso_split_into
              with head/tailroom on what a TAP read can hold (virtio_net_hdr + frame; read
              from right before an inaccessible page when it fits one): raw
              bytes, and mutations of valid IPv4/IPv6/VLAN super-frames. Only OffloadError
              (a documented code) escapes; the three splits agree; no frame exceeds max_frame.
              gro_coalesce and gro_coalesce_iov on a batch of decrypted frames cut from the
              case's bytes (what peers send): they agree, and never return more writes than
              frames.  A memory error in the C code kills the worker: a crash.

    ident     ident_check (fp_ident_check, enclave/_fp_ident.pxi: what source a peer's decrypted
              frame may claim) on raw frames and mutations of ARP, IPv4, IPv6, Neighbour
              Advertisement and VLAN-tagged frames, for a plain and a bridging peer with
              gateway routes; the frame sits right before an inaccessible page, so one byte
              read past it kills the worker (a crash); the verdict is one of IDENT_*

The C code is not coverage-instrumented (atheris sees the Python around it); the mutations of
valid super-frames are what reaches its deeper branches.
"""

from __future__ import annotations

from array import array

from bench.fuzz.harness import Factory, Reader
from enclave import _fastpath as fp
from tests.support.ident_frames import (
    BROADCAST,
    ETH_ARP,
    ETH_IPV4,
    ETH_IPV6,
    ETH_VLAN,
    ND_OPT_TLLA,
    PROTO_ICMPV6,
    PROTO_UDP,
    Guarded,
    arp,
    eth,
    icmp6_na,
    ipv4,
    ipv6,
    link_local,
    nd_option,
    udp,
)
from tests.support.offload_cases import GOOD, GOOD6
from tests.support.offload_frames import TS_OPTS, Seg, payload, superframe

MAX_FRAMES = (0, 1514, 1518, 9014, 200)
HEAD, TAIL = 16, 16


def _split(fn_name: str, pkt: bytes, max_frame: int, guard: Guarded) -> list[bytes] | int:
    """One split function's frames, or its error code; read-only splits read the packet from
    right before an inaccessible page (when it fits one), so an over-read is a crash."""
    packet: bytes | memoryview = guard.place(pkt) if len(pkt) <= guard.page else pkt
    try:
        if fn_name == "split":
            return fp.tso_split(packet, max_frame)
        if fn_name == "inplace":
            return fp.tso_split_inplace(bytearray(pkt), max_frame)
        buf = bytearray(len(pkt) + fp.TSO_MAX_SEGS * (256 + HEAD + TAIL))
        offs = array("I", bytes(4 * fp.TSO_MAX_SEGS))
        lens = array("I", bytes(4 * fp.TSO_MAX_SEGS))
        n = fp.tso_split_into(packet, buf, offs, lens, 0, HEAD, TAIL, max_frame)
        return [bytes(buf[offs[i] + HEAD : offs[i] + HEAD + lens[i]]) for i in range(n)]
    except fp.OffloadError as exc:
        assert exc.code in fp.OFFLOAD_ERRORS
        return exc.code


def outcome(result: list[bytes] | int | None) -> int:
    """A distinct branch per outcome (error code, number of frames): with this module
    instrumented, new outcomes count as new coverage for the fuzzer, which cannot see into C."""
    if result is None:
        return 0
    if isinstance(result, int):
        for code in sorted(fp.OFFLOAD_ERRORS):
            if result == code:
                return code
        return 0
    n = len(result)
    if n == 1:
        return 1
    if n < 8:
        return 2
    if n < fp.TSO_MAX_SEGS:
        return 3
    return 4


class OffloadTarget:
    max_len = 9100

    def __init__(self, seed: int) -> None:
        self.bases = [GOOD, GOOD6, superframe(Seg(payload(3000), vlan=9, tcp_opts=TS_OPTS), 700)]
        self.guard = Guarded()

    def seeds(self) -> list[bytes]:
        return [bytes([1, i, 0, 0]) for i in range(len(self.bases))] + [bytes([0, 0]) + GOOD]

    def one(self, data: bytes) -> None:
        r = Reader(data)
        mode = r.u8() % 3
        max_frame = MAX_FRAMES[r.u8() % len(MAX_FRAMES)]
        if mode == 2:
            self._gro(r)
            return
        pkt = r.rest() if mode == 0 else r.edits(self.bases[r.u8() % len(self.bases)], 12)
        a = _split("split", pkt, max_frame, self.guard)
        b = _split("inplace", pkt, max_frame, self.guard)
        c = _split("into", pkt, max_frame, self.guard)
        outcome(a)
        outcome(c)
        assert a == b, f"tso_split and tso_split_inplace disagree: {a!r:.80} / {b!r:.80}"
        # tso_split_into may refuse a split that does not fit its own buffer plan (E_ARG-like
        # codes); when both succeed they must agree
        if isinstance(a, list) and isinstance(c, list):
            assert a == c, "tso_split and tso_split_into disagree"
        if isinstance(a, list) and max_frame:
            assert all(len(f) <= max_frame for f in a), "a frame exceeds max_frame"

    def _gro(self, r: Reader) -> None:
        verify = r.u8() % 2 == 0
        frames: list[bytes] = []
        while len(frames) < fp.GRO_MAX_FRAMES and r.at < len(r.data):
            n = r.uint(2) % 1600
            f = r.take(n)
            if f:
                frames.append(f)
        try:
            out = fp.gro_coalesce(frames, verify)
        except fp.OffloadError as exc:
            assert exc.code in fp.OFFLOAD_ERRORS
            out = None
        try:
            iov = fp.gro_coalesce_iov(frames, verify)
        except fp.OffloadError as exc:
            assert exc.code in fp.OFFLOAD_ERRORS
            iov = None
        assert out == iov, "gro_coalesce and gro_coalesce_iov disagree"
        outcome(out)
        if out is not None:
            assert len(out) <= len(frames)

    def state(self) -> dict[str, tuple[int, int]]:
        return {}


P_MAC, V_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
P_IP, V_IP, P_IP6 = "100.64.0.1", "100.64.0.2", "fd00::1"
ROUTES = ("192.168.0.0/16",)


def ident_seeds() -> list[bytes]:
    ll = link_local(P_MAC)
    return [
        eth(BROADCAST, P_MAC, ETH_ARP, arp(1, P_MAC, P_IP, bytes(6), P_IP)),
        eth(BROADCAST, P_MAC, ETH_ARP, arp(2, P_MAC, V_IP, V_MAC, V_IP)),
        eth(V_MAC, P_MAC, ETH_IPV4, ipv4(P_IP, V_IP, PROTO_UDP, udp(5000, 5000, b"x"))),
        eth(V_MAC, P_MAC, ETH_IPV4, ipv4("0.0.0.0", "255.255.255.255", PROTO_UDP, udp(68, 67))),
        eth(V_MAC, P_MAC, ETH_IPV6, ipv6(ll, "ff02::1", PROTO_UDP, udp(546, 547, b"x"))),
        eth(BROADCAST, P_MAC, ETH_IPV6, ipv6(ll, "ff02::1", PROTO_ICMPV6,
                                             icmp6_na(P_IP6, nd_option(ND_OPT_TLLA, P_MAC)))),
        eth(V_MAC, P_MAC, ETH_IPV4, ipv4(V_IP, P_IP, PROTO_UDP, udp(1, 2)), (ETH_VLAN,)),
        eth(V_MAC, P_MAC, 0x88B5, b"custom ethertype"),
    ]


class IdentTarget:
    max_len = 1600

    def __init__(self, seed: int) -> None:
        self.bases = ident_seeds()
        self.guard = Guarded()
        self.verdicts = {fp.IDENT_PASS, fp.IDENT_MAC_SPOOFED, fp.IDENT_IP_SPOOFED,
                         fp.IDENT_ARP_SPOOFED}

    def seeds(self) -> list[bytes]:
        return [bytes([1, i]) for i in range(len(self.bases))] + [bytes([0]) + self.bases[2]]

    def one(self, data: bytes) -> None:
        r = Reader(data)
        mode = r.u8()
        frame = r.rest() if mode % 2 == 0 else r.edits(self.bases[r.u8() % len(self.bases)], 6)
        bridging = mode & 2 != 0
        routes = ROUTES if mode & 4 else ()
        verdict = fp.ident_check(self.guard.place(frame[: self.guard.page]), peer_mac=P_MAC,
                                 bridging=bridging, overlay_ip4=P_IP, overlay_ip6=(P_IP6,),
                                 routes=routes)
        assert verdict in self.verdicts, verdict
        for v in sorted(self.verdicts):  # one branch per verdict: new verdicts guide the fuzzer
            if verdict == v:
                break

    def state(self) -> dict[str, tuple[int, int]]:
        return {}


FACTORIES: dict[str, Factory] = {"offload": OffloadTarget, "ident": IdentTarget}
