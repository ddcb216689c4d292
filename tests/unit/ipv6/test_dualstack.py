"""One UDP socket for both families: the address forms (enclave.discovery.dualstack), the agent's
data socket (enclave.agent.udp_socket) and the compiled recvmmsg's unmapping (_fp_udp.pxi), on
real loopback sockets."""

from __future__ import annotations

import socket
from array import array
from collections.abc import Iterator

import pytest

from enclave._fastpath import UdpBatchIO
from enclave.agent.udp_socket import any_address, data_socket, send_to
from enclave.discovery.dualstack import family_of, sendable, unmapped, unmapped_addr

TIMEOUT = 2.0


@pytest.mark.parametrize(("given", "want"), [
    ("::ffff:198.18.1.1", "198.18.1.1"),
    ("::FFFF:10.0.0.1", "10.0.0.1"),
    ("198.18.1.1", "198.18.1.1"),
    ("2001:db8::11", "2001:db8::11"),
    ("::198.18.1.1", "::198.18.1.1"),  # IPv4-compatible (deprecated), not mapped: kept
    ("fe80::1%eth0", "fe80::1%eth0"),
    ("not-an-ip", "not-an-ip"),
    ("", ""),
])
def test_unmapped(given: str, want: str) -> None:
    assert unmapped(given) == want


def test_address_tuples_and_families() -> None:
    assert unmapped_addr(("::ffff:198.18.1.1", 5, 0, 0)) == ("198.18.1.1", 5)
    assert unmapped_addr(("2001:db8::1", 7, 0, 0)) == ("2001:db8::1", 7)
    assert sendable(("198.18.1.1", 5), True) == ("::ffff:198.18.1.1", 5)
    assert sendable(("198.18.1.1", 5), False) == ("198.18.1.1", 5)
    assert sendable(("2001:db8::1", 5), True) == ("2001:db8::1", 5)
    assert family_of("::ffff:1.2.3.4") == 4 and family_of("2001:db8::1") == 6
    with pytest.raises(ValueError):
        family_of("example.org")


@pytest.fixture
def dual() -> Iterator[socket.socket]:
    sock = data_socket()
    if sock.family != socket.AF_INET6:
        sock.close()
        pytest.skip("no IPv6 in this kernel")
    sock.bind((any_address(sock), 0))
    try:
        yield sock
    finally:
        sock.close()


def test_data_socket_takes_both_families(dual: socket.socket) -> None:
    port = dual.getsockname()[1]
    dual.settimeout(TIMEOUT)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as v4, \
            socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as v6:
        v4.bind(("127.0.0.1", 0))
        v6.bind(("::1", 0))
        v4.settimeout(TIMEOUT)
        v6.settimeout(TIMEOUT)
        v4.sendto(b"four", ("127.0.0.1", port))
        v6.sendto(b"six", ("::1", port))
        seen = {}
        for _ in range(2):
            data, addr = dual.recvfrom(64)
            seen[data] = unmapped_addr(addr)
        assert seen == {b"four": ("127.0.0.1", v4.getsockname()[1]),
                        b"six": ("::1", v6.getsockname()[1])}
        send_to(dual, b"back4", seen[b"four"])  # plain IPv4 text works through send_to
        send_to(dual, b"back6", seen[b"six"])
        assert v4.recvfrom(64)[0] == b"back4"
        assert v6.recvfrom(64)[0] == b"back6"


def test_batched_receive_reports_ipv4_senders_as_ipv4(dual: socket.socket) -> None:
    """recvmmsg on a dual-stack socket: an IPv4 sender comes out as a.b.c.d (never
    ::ffff:a.b.c.d), so the data plane's address of a peer is one form whichever way a packet
    came; IPv6 senders stay IPv6. The batched send reaches an IPv4 destination given as IPv4."""
    port = dual.getsockname()[1]
    io = UdpBatchIO()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as v4, \
            socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as v6:
        v4.bind(("127.0.0.1", 0))
        v6.bind(("::1", 0))
        v4.sendto(b"four", ("127.0.0.1", port))
        v6.sendto(b"six", ("::1", port))
        size = 256
        buf = bytearray(2 * size)
        offsets, sizes, lengths = array("I", [0, size]), array("I", [size] * 2), array("I", [0, 0])
        got: dict[bytes, tuple[str, int]] = {}
        while len(got) < 2:
            n = io.recv(dual.fileno(), buf, offsets, sizes, lengths, timeout=TIMEOUT)
            assert n > 0, f"timed out with {got}"
            for i in range(n):
                got[bytes(buf[offsets[i]:offsets[i] + lengths[i]])] = io.source(i)
        assert got == {b"four": ("127.0.0.1", v4.getsockname()[1]),
                       b"six": ("::1", v6.getsockname()[1])}
        out = bytearray(b"reply")
        sent = io.send(dual.fileno(), out, array("I", [0]), array("I", [5]),
                       ("127.0.0.1", v4.getsockname()[1]))
        assert sent == 1
        v4.settimeout(TIMEOUT)
        assert v4.recvfrom(64)[0] == b"reply"
