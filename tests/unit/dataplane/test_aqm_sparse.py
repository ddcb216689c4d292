"""The tx queue's sparse lane (enclave/_fp_aqm.pxi: aqm_enqueue, fp_flow_bucket), with the
tx loop's dequeue order (AqmQueue): a small frame of a flow that has nothing queued is served
before a bulk flow's backlog, a flow with frames queued is never reordered, the lane is
bounded, and the flow key is the IP 5-tuple."""

from __future__ import annotations

import struct

import pytest

from enclave import _fastpath as fp

MAC = bytes.fromhex("020000000002") + bytes.fromhex("020000000001")


def ipv4(proto: int, sport: int, dport: int, payload: int, *, src: str = "100.64.0.1",
         dst: str = "100.64.0.2", frag: int = 0) -> bytes:
    l4 = struct.pack("!HH", sport, dport) + bytes(payload + 4)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, frag, 64, proto, 0,
                      bytes(int(x) for x in src.split(".")),
                      bytes(int(x) for x in dst.split(".")))
    return MAC + b"\x08\x00" + hdr + l4


def ipv6(proto: int, sport: int, dport: int, payload: int) -> bytes:
    l4 = struct.pack("!HH", sport, dport) + bytes(payload + 4)
    hdr = struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64,
                      bytes(15) + b"\x01", bytes(15) + b"\x02")
    return MAC + b"\x86\xdd" + hdr + l4


BULK = ipv4(6, 40000, 5201, 1400)            # a bulk TCP flow's full-size frame
PING = ipv4(17, 50000, 5312, 64)             # an interactive UDP flow's small frame


def drain(q: fp.AqmQueue) -> list[tuple[bytes, int, bool]]:
    out = []
    while (x := q.pop()) is not None:
        out.append(x)
    return out


def test_a_small_frame_of_an_idle_flow_goes_before_a_bulk_backlog() -> None:
    q = fp.AqmQueue()
    for t in range(10):
        assert q.push(BULK, t)
    assert q.push(PING, 10)
    got = drain(q)
    assert got[0] == (PING, 10, True)
    assert [x[1] for x in got[1:]] == list(range(10))
    assert all(x[0] == BULK and not x[2] for x in got[1:])


def test_without_the_lane_the_same_frame_would_wait_behind_the_backlog() -> None:
    """A small frame of the bulk flow itself (same 5-tuple) keeps its place: no reordering."""
    q = fp.AqmQueue()
    small_of_bulk = ipv4(6, 40000, 5201, 100)
    for t in range(3):
        q.push(BULK, t)
    q.push(small_of_bulk, 3)
    q.push(BULK, 4)
    got = drain(q)
    assert [(x[1], x[2]) for x in got] == [(0, False), (1, False), (2, False), (3, False),
                                          (4, False)]
    assert got[3][0] == small_of_bulk


def test_once_a_flows_backlog_is_gone_its_small_frames_are_sparse_again() -> None:
    q = fp.AqmQueue()
    flow = ipv4(6, 40001, 22, 100)
    q.push(ipv4(6, 40001, 22, 1400), 0)          # a large frame of the flow: ring
    q.push(flow, 1)                              # behind it (same flow)
    assert [x[2] for x in drain(q)] == [False, False]
    q.push(BULK, 2)
    q.push(flow, 3)                              # nothing of this flow queued now
    assert drain(q)[0] == (flow, 3, True)


def test_large_frames_never_take_the_lane() -> None:
    q = fp.AqmQueue()
    big = ipv4(17, 50001, 5312, fp.AQM_SPARSE_FRAME)     # just over the limit
    assert len(big) > fp.AQM_SPARSE_FRAME
    q.push(BULK, 0)
    q.push(big, 1)
    assert [x[2] for x in drain(q)] == [False, False]


def test_the_lane_is_bounded_and_the_overflow_queues_in_order() -> None:
    q = fp.AqmQueue()
    q.push(BULK, 0)
    n = fp.AQM_SPARSE_SLOTS + 1
    for i in range(n):                           # distinct flows: distinct source ports
        assert q.push(ipv4(17, 1000 + i, 5312, 10), 1 + i)
    got = drain(q)
    assert len(got) == n + 1
    assert sum(1 for x in got if x[2]) <= fp.AQM_SPARSE_SLOTS
    ring = [x[1] for x in got if not x[2]]
    assert ring[0] == 0 and ring == sorted(ring)    # the ring stays FIFO behind the lane


def test_non_ip_frames_are_queued_and_served() -> None:
    arp = MAC + b"\x08\x06" + bytes(28)
    q = fp.AqmQueue()
    q.push(BULK, 0)
    q.push(arp, 1)
    got = drain(q)
    assert got[0] == (arp, 1, True) and got[1][0] == BULK


def test_push_refuses_an_empty_frame() -> None:
    with pytest.raises(ValueError):
        fp.AqmQueue().push(b"", 0)


def test_flow_bucket_is_the_5_tuple() -> None:
    a = fp.flow_bucket(ipv4(6, 40000, 5201, 1400))
    assert a == fp.flow_bucket(ipv4(6, 40000, 5201, 10))          # size does not matter
    others = {fp.flow_bucket(ipv4(6, 40000 + i, 5201, 10)) for i in range(1, 9)}
    assert others - {a}                                          # ports do
    assert 0 <= a < 1024
    v6 = fp.flow_bucket(ipv6(17, 1, 2, 10))
    assert v6 == fp.flow_bucket(ipv6(17, 1, 2, 500))
    assert {fp.flow_bucket(ipv6(17, 1, 2 + i, 10)) for i in range(1, 9)} - {v6}


def test_a_later_fragment_is_hashed_without_ports() -> None:
    """A non-first fragment has no L4 header: its first bytes are payload, not ports."""
    frags = {fp.flow_bucket(ipv4(17, 1000 + i, 2000 + i, 100, frag=10)) for i in range(8)}
    assert len(frags) == 1


@pytest.mark.parametrize("raw", [b"", b"\x00" * 5, MAC, MAC + b"\x08\x00" + b"\x45",
                                 MAC + b"\x86\xdd" + bytes(10), MAC + b"\x81\x00"])
def test_short_or_odd_frames_hash_without_error(raw: bytes) -> None:
    assert 0 <= fp.flow_bucket(raw) < 1024
