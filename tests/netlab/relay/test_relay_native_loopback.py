"""The platform's UDP relay with its native forwarder (RelayServer on loopback, thread
enclave-relay), driven by two real RelayClients on their own UDP sockets.

    X (RelayClient, udp) --REGISTER--> RelayServer: punted to RelayCore --> CHALLENGE/REGISTERED
    Y likewise; then DATA X -> Y and Y -> X crosses in the native thread (RelayCore sees none)
    EVE sends DATA with X's channel from its own address: dropped, counted, no answer
    junk of every size: punted or dropped, the thread keeps running
    a UDP GSO run from X arrives whole (UDP_GRO) and leaves as one GSO message; a run whose
    segments go different ways is taken segment by segment
    allow_only without Y: the next DATA is dropped at once
    close(): no enclave-relay thread and no file descriptor left behind
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import threading
import time
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from enclave._fastpath import UdpBatchIO
from enclave.agent.relay_client import RelayClient
from enclave.platform.relay import RelayCore, RelayServer, mint_ticket
from enclave.proto.wire import MSG_RELAY_DATA, pack_relay_header
from tests.support.wait import wait_for_async

LO = "127.0.0.1"
KEY = bytes(range(32))
QUIET = 0.5  # seconds a socket is listened on to show that nothing arrives


@dataclass
class End:
    name: str
    peer: str
    sock: socket.socket
    rc: RelayClient

    @property
    def addr(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()
        return str(host), int(port)


def _end(name: str, peer: str) -> End:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LO, 0))
    s.setblocking(False)
    return End(name, peer, s, RelayClient())


async def _recv(sock: socket.socket, timeout: float) -> tuple[bytes, tuple[str, int]] | None:
    loop = asyncio.get_running_loop()
    try:
        data, src = await asyncio.wait_for(loop.sock_recvfrom(sock, 70000), timeout)
    except TimeoutError:
        return None
    return data, (str(src[0]), int(src[1]))


async def _register(end: End, relay: tuple[str, int]) -> None:
    ticket = mint_ticket(KEY, end.name, end.peer, int(time.time()) + 600)
    out = end.rc.add(end.peer, relay, ticket, time.time())
    for _ in range(10):
        for data, dst in out:
            end.sock.sendto(data, dst)
        got = await _recv(end.sock, 1.0)
        if got is None:
            out = end.rc.add(end.peer, relay, ticket, time.time())
            continue
        r = end.rc.receive(got[0], got[1], time.time())
        assert r is not None
        if r.kind in ("registered", "refreshed"):
            return
        out = r.send
    raise AssertionError(f"{end.name} not registered")


def _data(end: End, payload: bytes) -> bytes:
    path = end.rc.path_for(end.peer)
    assert path is not None
    route = end.rc.route(path)
    assert route is not None
    return pack_relay_header(MSG_RELAY_DATA, route[1]) + payload


async def _exchange(a: End, b: End, relay: tuple[str, int], n: int) -> list[bytes]:
    """n DATA messages from a to b (a few at a time); the messages b got, as its client saw
    them (relay header gone)."""
    got: list[bytes] = []
    for i in range(n):
        a.sock.sendto(_data(a, b"msg-%06d" % i + bytes(1000)), relay)
        if i % 32 == 31:
            while (r := await _recv(b.sock, 0.05)) is not None:
                inp = b.rc.receive(r[0], r[1], time.time())
                assert inp is not None and inp.kind == "data"
                got.append(inp.message)
    while (r := await _recv(b.sock, QUIET)) is not None:
        inp = b.rc.receive(r[0], r[1], time.time())
        assert inp is not None and inp.kind == "data"
        got.append(inp.message)
    return got


def _relay_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "enclave-relay"]


@asynccontextmanager
async def _relay(bind: str = LO) -> AsyncIterator[tuple[RelayServer, tuple[str, int], End, End]]:
    server = RelayServer(RelayCore(KEY))
    relay = await server.start(bind, 0)
    relay = (LO, relay[1])  # X and Y are IPv4 (a dual-stack relay takes them on "::")
    x, y = _end("XXXXX", "YYYYY"), _end("YYYYY", "XXXXX")
    try:
        await _register(x, relay)
        await _register(y, relay)
        yield server, relay, x, y
    finally:
        server.close()
        x.sock.close()
        y.sock.close()


def _run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 60))


def test_data_crosses_in_the_native_thread_only() -> None:
    async def body() -> None:
        async with _relay() as (server, relay, x, y):
            fwd = server.forwarder
            assert fwd is not None and fwd.running and len(fwd) == 2
            to_y = await _exchange(x, y, relay, 300)
            to_x = await _exchange(y, x, relay, 300)
            assert to_y == [b"msg-%06d" % i + bytes(1000) for i in range(300)]  # same bytes
            assert len(to_x) == 300
            c = fwd.counters()
            assert c["forwarded"] == 600 and c["forwarded_bytes"] == 600 * 1010
            assert c["sendmmsg_calls"] <= c["rounds"] <= 600
            assert server.core.data_seen == 0 and server.python_data == 0
            assert server.core.forwarded == 0
            assert server.forwarded == 600 and server.forwarded_bytes == 600 * 1010
    _run(body)


def test_a_dual_stack_relay_socket_forwards_ipv4_natively() -> None:
    async def body() -> None:
        async with _relay("::") as (server, relay, x, y):
            fwd = server.forwarder
            assert fwd is not None and len(fwd) == 2
            channel = int.from_bytes(_data(x, b"")[4:8], "little")
            assert fwd.lookup(x.addr, channel) is not None  # keyed as plain IPv4
            assert len(await _exchange(x, y, relay, 50)) == 50
            assert len(await _exchange(y, x, relay, 50)) == 50
            assert fwd.counters()["forwarded"] == 100 and server.python_data == 0
    _run(body)


def test_forged_source_and_unregistered_channel_get_silence_and_are_counted() -> None:
    async def body() -> None:
        async with _relay() as (server, relay, x, y):
            fwd = server.forwarder
            assert fwd is not None
            eve = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            eve.bind((LO, 0))
            eve.setblocking(False)
            try:
                for _ in range(50):
                    eve.sendto(_data(x, b"forged"), relay)  # X's channel, EVE's address
                path = x.rc.path_for(y.name)
                route = None if path is None else x.rc.route(path)
                assert route is not None
                other = route[1] % 65535 + 1
                for _ in range(50):  # X's address, a channel X never registered
                    x.sock.sendto(pack_relay_header(MSG_RELAY_DATA, other) + b"x", relay)
                assert await _recv(y.sock, QUIET) is None  # nothing forwarded
                assert await _recv(eve, QUIET) is None  # nothing answered
                assert await _recv(x.sock, QUIET) is None
                assert fwd.counters()["drop_unknown"] == 100
                assert server.drops()["unknown"] == 100 and server.python_data == 0
                assert len(await _exchange(x, y, relay, 10)) == 10  # X itself still passes
            finally:
                eve.close()
    _run(body)


def test_junk_does_not_stop_the_thread() -> None:
    async def body() -> None:
        async with _relay() as (server, relay, x, y):
            fwd = server.forwarder
            assert fwd is not None
            rng = random.Random(7)
            junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sizes = [0, 1, 7, 8, 9, 24, 81, 1500, 9000, 65507]
                sizes += [rng.randint(0, 2000) for _ in range(500)]
                header_only = 1  # DATA with nothing behind the header: RelayCore's
                for i, n in enumerate(sizes):
                    head = rng.choice([b"", b"\x23\x00\x00\x00", b"\x20\x00\x00\x00",
                                       pack_relay_header(MSG_RELAY_DATA, rng.randint(1, 65535))])
                    header_only += len(head) == 8 and n == 0
                    junk.sendto((head + rng.randbytes(n))[:65507], relay)
                    if i % 16 == 15:  # paced: the relay's 256 KiB buffer is not the test
                        await asyncio.sleep(0.002)
                junk.sendto(_data(x, b""), relay)  # header-only DATA: Python's, as before
                junk.setblocking(False)
                await asyncio.sleep(QUIET)
                assert fwd.running
                assert await _recv(junk, QUIET) is None  # no answer to anything
                c = fwd.counters()
                # each junk datagram reached the thread or was dropped by the kernel with
                # the socket's buffer full (a loaded machine); most reached it
                overflow = server.drops()["overflow"]
                assert c["datagrams"] + overflow >= len(sizes), (c, overflow)
                assert c["datagrams"] >= len(sizes) // 4, (c, overflow)
                assert c["punted"] + c["punt_dropped"] > 0 and c["forwarded"] == 0
                assert server.python_data <= header_only
                assert len(await _exchange(x, y, relay, 10)) == 10
            finally:
                junk.close()
    _run(body)


def test_disallowed_system_is_cut_at_once() -> None:
    async def body() -> None:
        async with _relay() as (server, relay, x, y):
            fwd = server.forwarder
            assert fwd is not None
            assert len(await _exchange(x, y, relay, 5)) == 5
            server.core.allow_only({"XXXXX"})  # Y revoked: what the control hub does
            assert len(fwd) == 0
            assert await _exchange(x, y, relay, 20) == []
            assert await _exchange(y, x, relay, 20) == []
            assert fwd.counters()["drop_unknown"] == 40
    _run(body)


def test_close_leaves_no_thread_and_no_descriptor() -> None:
    async def body() -> None:
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(3):
            async with _relay() as (server, relay, x, y):
                assert _relay_threads() == ["enclave-relay"]
                assert len(await _exchange(x, y, relay, 3)) == 3
            assert server.forwarder is None
            assert _relay_threads() == []
        assert len(os.listdir("/proc/self/fd")) == before
    _run(body)


def _gso_send(end: End, relay: tuple[str, int], segments: list[bytes]) -> None:
    """One UDP GSO message: the segments back to back, cut by the kernel (loopback keeps the
    run whole up to the relay socket, which has UDP_GRO on)."""
    size = len(segments[0])
    assert all(len(s) == size for s in segments[:-1])
    buf = bytearray(b"".join(segments))
    io = UdpBatchIO()
    sent = io.send(end.sock.fileno(), buf, array("I", [0]), array("I", [len(buf)]), relay,
                   gso_size=size)
    assert sent == 1


async def _drain(end: End) -> list[bytes]:
    got = []
    while (r := await _recv(end.sock, QUIET)) is not None:
        inp = end.rc.receive(r[0], r[1], time.time())
        assert inp is not None and inp.kind == "data"
        got.append(inp.message)
    return got


def test_a_gso_run_is_forwarded_whole_and_a_mixed_run_segment_by_segment() -> None:
    async def body() -> None:
        async with _relay() as (server, relay, x, y):
            fwd = server.forwarder
            assert fwd is not None and fwd.counters()["udp_gro"]
            msgs = [b"seg-%04d" % i + bytes(992) for i in range(20)]
            _gso_send(x, relay, [_data(x, m) for m in msgs])
            assert await _drain(y) == msgs
            c = fwd.counters()
            assert c["forwarded"] == 20 and c["gro_runs"] == 1 and c["gso_sends"] == 1

            path = x.rc.path_for(y.name)
            route = None if path is None else x.rc.route(path)
            assert route is not None
            stranger = pack_relay_header(MSG_RELAY_DATA, route[1] % 65535 + 1)
            mixed = [_data(x, m) if i % 2 == 0 else stranger + m for i, m in enumerate(msgs)]
            _gso_send(x, relay, mixed)
            assert await _drain(y) == msgs[::2]  # the good half, in order
            c = fwd.counters()
            assert c["forwarded"] == 30 and c["drop_unknown"] == 10
            assert c["gro_runs"] == 2 and c["gso_sends"] == 1
            assert server.python_data == 0
    _run(body)


def test_runs_of_128_tiny_segments_do_not_overrun_the_queues() -> None:
    """64 GSO runs of 128 16-byte segments in one sendmmsg: up to 8,192 segments may reach one
    recvmmsg of the forwarder (more than UDP GRO ever makes); every one is forwarded or
    dropped and counted, and the thread runs on."""
    async def body() -> None:
        async with _relay() as (server, relay, x, y):
            fwd = server.forwarder
            assert fwd is not None
            y.sock.setsockopt(socket.SOL_UDP, 104, 1)  # UDP_GRO: Y takes the runs whole
            seg = _data(x, b"tinyseg!")
            buf = bytearray(seg * 128 * 64)
            before = fwd.counters()["datagrams"]
            io = UdpBatchIO()
            sent = io.send(x.sock.fileno(), buf, array("I", [i * 2048 for i in range(64)]),
                           array("I", [2048] * 64), relay, gso_size=len(seg))
            assert sent == 64
            await asyncio.sleep(QUIET)

            def accounted() -> bool:  # (read between two of the thread's rounds: it counts
                c = fwd.counters()    # a round's runs as it takes them, their segments after)
                runs = c["datagrams"] - before
                return runs > 0 and (c["forwarded"] + c["drop_truncated"] + c["drop_rate"]
                                     == 128 * runs)

            await wait_for_async(accounted, 10, what="every segment of each run counted")
            assert fwd.running
            while await _recv(y.sock, QUIET) is not None:  # the runs, whole
                pass
            y.sock.setsockopt(socket.SOL_UDP, 104, 0)
            assert len(await _exchange(x, y, relay, 5)) == 5
    _run(body)
