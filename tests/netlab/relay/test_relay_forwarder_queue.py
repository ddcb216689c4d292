"""The relay forwarder's receive queue (RelayForwarder on loopback, real UDP sockets, thread
enclave-relay): CoDel on the sojourn the kernel's SO_TIMESTAMPNS gives, and the punt bucket.

    sender --DATA (1,200 B bulk, 200 B small)--> relay socket [queue stands while the thread is
        not started] --start--> enclave-relay --forwarded--> receiver
      CoDel on (tiny target): bulk datagrams dropped (drop_aqm), every small one forwarded, and
        forwarded + dropped = sent; CoDel off: all forwarded, the sojourns still counted
    junk --REGISTER x 2,000--> relay socket --> enclave-relay: at most punt_burst + punt_rate x
        elapsed reach the punt socket, the rest dropped (drop_punt_rate)
    a full receive buffer: the kernel's drops counted (socket_drops, RelayServer "overflow")
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager

from enclave._fastpath import RELAY_DROP_COUNTERS, RelayForwarder
from enclave.platform.relay import RelayCore, RelayServer, socket_drops
from enclave.proto.wire import MSG_RELAY_DATA, MSG_RELAY_REGISTER, pack_relay_header
from tests.support.wait import wait_for

LO = "127.0.0.1"
BULK, SMALL = 1200, 200
HELD_S = 0.03  # the queue stands this long before the thread starts
SO_TIMESTAMPNS = 35  # Linux (asm-generic/socket.h); the socket module does not name it


def _sock(rcvbuf: int = 8 << 20) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LO, 0))
    s.setblocking(False)
    try:
        s.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE (root)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    return s


@contextmanager
def _three() -> Iterator[tuple[socket.socket, socket.socket, socket.socket]]:
    socks = (_sock(), _sock(), _sock())
    try:
        yield socks
    finally:
        for s in socks:
            s.close()


def _stamped_on_arrival() -> bool:
    """Whether the kernel now stamps datagrams as they arrive. Turning SO_TIMESTAMPNS on is
    global and deferred (net_enable_timestamp: a static key flipped by a work item); a
    datagram that came in before it took effect is stamped when it is read, so its sojourn
    reads ~0. A datagram sent, left 20 ms, then read, shows whether stamping is live."""
    with _three() as (a, b, _):
        b.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        a.sendto(b"t", b.getsockname())
        time.sleep(0.02)
        try:
            _, anc, _, _ = b.recvmsg(16, socket.CMSG_SPACE(16))
        except BlockingIOError:
            return False
        stamps = [struct.unpack("qq", d[:16]) for lvl, kind, d in anc
                  if lvl == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS]
        return bool(stamps) and time.time() - (stamps[0][0] + stamps[0][1] * 1e-9) >= 0.015


def _queued(s: socket.socket) -> int:
    """Bytes of the next datagram waiting in s (0: none), SIOCINQ."""
    return struct.unpack("i", fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0" * 4))[0]


def _drain(s: socket.socket, quiet: float = 0.5) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + quiet
    while time.monotonic() < deadline:
        try:
            got.append(s.recv(70000))
            deadline = time.monotonic() + quiet
        except BlockingIOError:
            time.sleep(0.01)
    return got


def _held_queue(target_ns: int) -> tuple[dict[str, int | bool], list[bytes], int, int]:
    """A queue of bulk and small DATA that stood HELD_S before the thread ran: (counters,
    what the receiver got, bulk sent, small sent)."""
    with _three() as (relay, src, dst):
        fwd = RelayForwarder(relay.fileno(), aqm_target_ns=target_ns,
                             aqm_interval_ns=max(2 * target_ns, 2000))
        try:
            wait_for(_stamped_on_arrival, timeout=10.0, what="kernel receive timestamps live")
            fwd.install(src.getsockname(), 5, dst.getsockname(), 9, 60.0)
            bulk = small = 0
            for i in range(400):
                small_one = i % 10 == 0
                body = (b"s%05d" % i).ljust(SMALL if small_one else BULK, b".")
                src.sendto(pack_relay_header(MSG_RELAY_DATA, 5) + body, relay.getsockname())
                small += small_one
                bulk += not small_one
            time.sleep(HELD_S)
            fwd.start()
            got = _drain(dst)
            fwd.stop()
            return fwd.counters(), got, bulk, small
        finally:
            fwd.close()


def test_codel_drops_bulk_from_a_standing_queue_and_never_a_small_datagram() -> None:
    c, got, bulk, small = _held_queue(1000)
    assert c["aqm"] is True and "drop_aqm" in RELAY_DROP_COUNTERS
    assert c["drop_aqm"] > 0
    assert c["forwarded"] + c["drop_aqm"] == bulk + small
    assert len(got) == c["forwarded"]
    assert sum(1 for g in got if len(g) == 8 + SMALL) == small  # every small one through
    assert all(g[4:8] == (9).to_bytes(4, "little") for g in got)  # rewritten to channel 9
    assert c["aqm_wait_max_us"] >= HELD_S * 1e6  # the first waited at least that long


def test_without_codel_the_queue_is_forwarded_whole_and_still_timed() -> None:
    c, got, bulk, small = _held_queue(0)
    assert c["aqm"] is False and c["drop_aqm"] == 0
    assert c["forwarded"] == bulk + small == len(got)
    assert c["aqm_timed"] > 0 and c["aqm_wait_max_us"] >= HELD_S * 1e6


def test_the_punt_bucket_bounds_what_reaches_python() -> None:
    with _three() as (relay, junk, _):
        fwd = RelayForwarder(relay.fileno(), punt_rate=50.0, punt_burst=10.0)
        try:
            fwd.start()
            t0 = time.monotonic()
            req = pack_relay_header(MSG_RELAY_REGISTER, 3) + bytes(16) + b"not a ticket" * 8
            for _ in range(2000):
                junk.sendto(req, relay.getsockname())

            def settled() -> dict[str, int | bool] | None:
                c = fwd.counters()
                seen = int(c["datagrams"])
                return c if seen and c["punted"] + c["drop_punt_rate"] == seen else None

            wait_for(lambda: _queued(relay) == 0 and settled() is not None,
                     what="the relay socket drained")
            elapsed = time.monotonic() - t0
            c = fwd.counters()
            punts = _drain(fwd.punt_socket, 0.2)
            assert len(punts) == c["punted"]
            assert c["punted"] <= 10 + 50 * elapsed + 1
            assert c["drop_punt_rate"] > 0
            assert c["punted"] + c["drop_punt_rate"] == c["datagrams"]
        finally:
            fwd.close()


def test_kernel_overflow_drops_are_counted() -> None:
    """A receive buffer nobody reads: what the kernel dropped is what socket_drops says, the
    figure /proc/net/udp shows for the socket; RelayServer.drops() reports it as overflow."""
    with _three() as (_, sender, _):
        full = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            full.bind((LO, 0))
            full.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            assert socket_drops(full) == 0
            for _ in range(300):
                sender.sendto(b"x" * BULK, full.getsockname())
            port = f"{full.getsockname()[1]:04X}"
            with open("/proc/net/udp") as f:
                row = next(ln.split() for ln in f if ln.split()[1].endswith(":" + port))
            assert socket_drops(full) == int(row[-1]) > 0
        finally:
            full.close()


async def _server_drops() -> dict[str, int]:
    server = RelayServer(RelayCore(bytes(32)))
    await server.start(LO, 0)
    try:
        return server.drops()
    finally:
        server.close()


def test_relay_server_reports_overflow_drops() -> None:
    drops = asyncio.run(_server_drops())
    assert drops["overflow"] == 0 and "aqm" in drops and "punt_rate" in drops
