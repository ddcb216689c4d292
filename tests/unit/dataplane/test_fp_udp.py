"""Batched UDP I/O (enclave/_fp_udp.pxi) over real loopback sockets."""

from __future__ import annotations

import errno
import os
import socket
from array import array
from collections.abc import Iterator

import pytest

from enclave._fastpath import UDP_BATCH_MAX, UdpBatchIO

SOL_UDP, UDP_SEGMENT, UDP_GRO = 17, 103, 104
TIMEOUT = 2.0


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    try:
        yield rx, tx
    finally:
        rx.close()
        tx.close()


def slots(n: int, size: int) -> tuple[bytearray, array, array, array]:
    return (bytearray(n * size), array("I", [i * size for i in range(n)]),
            array("I", [size] * n), array("I", [0] * n))


def recv_all(io: UdpBatchIO, rx: socket.socket, want: int, size: int = 2048) -> list[bytes]:
    """Drain `want` datagrams (several recvmmsg calls if needed), each with a timeout."""
    got: list[bytes] = []
    while len(got) < want:
        buf, offsets, sizes, lengths = slots(min(UDP_BATCH_MAX, want - len(got)), size)
        n = io.recv(rx.fileno(), buf, offsets, sizes, lengths, timeout=TIMEOUT)
        assert n > 0, f"timed out after {len(got)} of {want} datagrams"
        got += [bytes(buf[offsets[i] : offsets[i] + lengths[i]]) for i in range(n)]
    return got


def test_sendmmsg_recvmmsg_roundtrip(pair: tuple[socket.socket, socket.socket]) -> None:
    rx, tx = pair
    io = UdpBatchIO()
    payloads = [os.urandom(1 + 23 * i) for i in range(UDP_BATCH_MAX)]
    buf = bytearray(b"".join(payloads))
    offsets = array("I")
    lengths = array("I")
    pos = 0
    for p in payloads:
        offsets.append(pos)
        lengths.append(len(p))
        pos += len(p)
    assert io.send(tx.fileno(), buf, offsets, lengths, rx.getsockname()) == UDP_BATCH_MAX
    rbuf, roffs, rsizes, rlens = slots(UDP_BATCH_MAX, 2048)
    got: list[bytes] = []
    while len(got) < UDP_BATCH_MAX:
        n = io.recv(rx.fileno(), rbuf, roffs, rsizes, rlens, timeout=TIMEOUT)
        assert n > 0
        for i in range(n):
            assert io.source(i) == tx.getsockname()
            assert io.gro_size(i) == 0 and io.truncated(i) is False
        got += [bytes(rbuf[roffs[i] : roffs[i] + rlens[i]]) for i in range(n)]
    assert got == payloads


def test_gso_send_is_split_into_segments(pair: tuple[socket.socket, socket.socket]) -> None:
    rx, tx = pair
    io = UdpBatchIO()
    seg = 1000
    run = b"".join(bytes([i]) * seg for i in range(9)) + b"\xee" * 300  # 9 full + 1 short
    assert io.send(tx.fileno(), run, array("I", [0]), array("I", [len(run)]),
                   rx.getsockname(), gso_size=seg) == 1
    got = recv_all(io, rx, 10)
    assert got == [bytes([i]) * seg for i in range(9)] + [b"\xee" * 300]


def test_gro_receive_reports_segment_size(pair: tuple[socket.socket, socket.socket]) -> None:
    rx, tx = pair
    rx.setsockopt(SOL_UDP, UDP_GRO, 1)
    io = UdpBatchIO()
    seg = 1200
    run = os.urandom(seg * 5)
    assert io.send(tx.fileno(), run, array("I", [0]), array("I", [len(run)]),
                   rx.getsockname(), gso_size=seg) == 1
    buf, offsets, sizes, lengths = slots(4, 65536)
    data = b""
    sizes_seen = []
    while len(data) < len(run):
        n = io.recv(rx.fileno(), buf, offsets, sizes, lengths, timeout=TIMEOUT)
        assert n > 0
        for i in range(n):
            data += bytes(buf[offsets[i] : offsets[i] + lengths[i]])
            sizes_seen.append(io.gro_size(i) or lengths[i])
    assert data == run
    assert set(sizes_seen) == {seg}  # coalesced (gro_size == seg) or one datagram at a time


def test_many_destinations_and_ipv6() -> None:
    rxs = [socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) for _ in range(3)]
    tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        for r in rxs:
            r.bind(("::1", 0))
        io = UdpBatchIO()
        buf = b"abc"
        dests = [(r.getsockname()[0], r.getsockname()[1]) for r in rxs]
        assert io.send(tx.fileno(), buf, array("I", [0, 1, 2]), array("I", [1, 1, 1]),
                       dests) == 3
        for r, want in zip(rxs, [b"a", b"b", b"c"], strict=True):
            assert recv_all(io, r, 1) == [want]
            assert io.source(0)[0] == "::1"
    finally:
        tx.close()
        for r in rxs:
            r.close()


def test_truncation_flagged(pair: tuple[socket.socket, socket.socket]) -> None:
    rx, tx = pair
    tx.sendto(b"x" * 100, rx.getsockname())
    io = UdpBatchIO()
    buf, offsets, sizes, lengths = slots(1, 10)
    assert io.recv(rx.fileno(), buf, offsets, sizes, lengths, timeout=TIMEOUT) == 1
    assert io.truncated(0) is True and bytes(buf) == b"x" * 10


def test_empty_socket_times_out_with_zero(pair: tuple[socket.socket, socket.socket]) -> None:
    rx, _ = pair
    io = UdpBatchIO()
    buf, offsets, sizes, lengths = slots(4, 100)
    assert io.recv(rx.fileno(), buf, offsets, sizes, lengths, timeout=0.0) == 0
    assert io.recv(rx.fileno(), buf, offsets, sizes, lengths, timeout=0.05) == 0
    with pytest.raises(IndexError):
        io.source(0)


def test_errors(pair: tuple[socket.socket, socket.socket]) -> None:
    rx, tx = pair
    io = UdpBatchIO()
    buf, offsets, sizes, lengths = slots(2, 100)
    r, w = os.pipe()
    os.close(w)
    os.close(r)
    with pytest.raises(OSError) as e:  # closed fd: poll reports POLLNVAL -> recvmmsg EBADF
        io.recv(r, buf, offsets, sizes, lengths, timeout=0.0)
    assert e.value.errno == errno.EBADF
    with pytest.raises(ValueError, match="exceeds"):
        io.recv(rx.fileno(), buf, array("I", [0, 150]), sizes, lengths)
    with pytest.raises(ValueError, match="exceeds"):
        io.send(tx.fileno(), buf, array("I", [150]), array("I", [100]), rx.getsockname())
    with pytest.raises(ValueError):
        too_many = array("I", [0] * (UDP_BATCH_MAX + 1))
        io.send(tx.fileno(), buf, too_many, too_many, rx.getsockname())
    with pytest.raises(ValueError, match="one destination per datagram"):
        io.send(tx.fileno(), buf, offsets, array("I", [1, 1]), [rx.getsockname()])
    with pytest.raises(OSError):  # not a numeric address: no DNS on the data path
        io.send(tx.fileno(), buf, offsets, array("I", [1, 1]), ("localhost", 9))
    with pytest.raises(OSError) as e:  # GSO segment count/size the kernel refuses
        io.send(tx.fileno(), bytearray(65000), array("I", [0]), array("I", [65000]),
                rx.getsockname(), gso_size=1)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(ValueError, match="timeout"):
        io.recv(rx.fileno(), buf, offsets, sizes, lengths, timeout=-1)
