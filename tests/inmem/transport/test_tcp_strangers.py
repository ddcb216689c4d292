"""The TCP data port against strangers (enclave.agent.transport_tcp), on loopback: a stream that
never carries an authenticated session is closed after AUTH_TIMEOUT, a source IP holds at most
MAX_STREAMS_PER_IP unauthenticated streams, and bytes that do not complete a frame do not keep
a stream alive.  (The kernel-side guard, no SYN-ACK at all, is tested in
tests/netlab/cloaking.)  The timeouts are shortened for the test; the logic is the real one."""

from __future__ import annotations

import asyncio

import pytest

from enclave.agent import transport_tcp as tt
from enclave.discovery import PathAddr, Transport
from enclave.localport import free_port

HOST = "127.0.0.1"


async def open_raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(HOST, port)


async def closed_by_peer(reader: asyncio.StreamReader, within: float) -> bool:
    """True when the transport closed (EOF or reset) the stream within `within` seconds."""
    try:
        data = await asyncio.wait_for(reader.read(100), within)
    except TimeoutError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True
    return data == b""


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_unauthenticated_stream_is_closed_after_the_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tt, "AUTH_TIMEOUT", 0.4)

    async def main() -> None:
        got: list[tuple[bytes, PathAddr]] = []
        t = tt.TcpTransport(free_port(), lambda d, a: got.append((d, a)), bind_host=HOST)
        await t.start()
        try:
            stranger_r, stranger_w = await open_raw(t.port)
            peer_r, peer_w = await open_raw(t.port)
            peer_w.write(tt.frame(b"hello"))  # a well-framed datagram: still no session
            await peer_w.drain()
            await asyncio.sleep(0.1)
            assert t.stream_count() == 2 and [d for d, _a in got] == [b"hello"]
            t.authenticate(got[0][1])  # the owner: a session runs over this one
            assert await closed_by_peer(stranger_r, 2.0)
            assert not await closed_by_peer(peer_r, 0.5)  # past the deadline, still open
            assert t.stream_count() == 1 and t.auth_timeouts == 1
            stranger_w.close()
            peer_w.close()
        finally:
            await t.close()

    run(main())


def test_streams_per_source_ip_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tt, "AUTH_TIMEOUT", 30.0)

    async def main() -> None:
        t = tt.TcpTransport(free_port(), lambda d, a: None, bind_host=HOST)
        await t.start()
        try:
            conns = [await open_raw(t.port) for _ in range(tt.MAX_STREAMS_PER_IP + 3)]
            await asyncio.sleep(0.2)
            assert t.stream_count() == tt.MAX_STREAMS_PER_IP
            assert t.refused == 3
            extra_closed = [await closed_by_peer(r, 0.3) for r, _w in conns[-3:]]
            assert extra_closed == [True, True, True]
            for _r, w in conns:
                w.close()
        finally:
            await t.close()

    run(main())


def test_partial_frames_do_not_keep_a_stream_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tt, "IDLE_TIMEOUT", 0.6)  # the reaper looks every IDLE_TIMEOUT / 6
    monkeypatch.setattr(tt, "AUTH_TIMEOUT", 30.0)

    async def main() -> None:
        got: list[PathAddr] = []
        t = tt.TcpTransport(free_port(), lambda d, a: got.append(a), bind_host=HOST)
        await t.start()
        try:
            r1, w1 = await open_raw(t.port)  # sends whole frames: stays
            r2, w2 = await open_raw(t.port)  # dribbles one byte of a frame header at a time
            w1.write(tt.frame(b"x"))
            await w1.drain()
            await asyncio.sleep(0.1)
            assert got
            w2.write(b"\x00\xff")  # a frame of 255 bytes announced ...
            for _ in range(8):  # ... and dribbled a byte every 0.2 s: 1.6 s, past IDLE_TIMEOUT
                w1.write(tt.frame(b"x"))
                w2.write(b"y")
                await asyncio.sleep(0.2)
            assert await closed_by_peer(r2, 0.5)
            assert not await closed_by_peer(r1, 0.1)
            w1.close()
            w2.close()
        finally:
            await t.close()

    run(main())


def test_authenticate_unknown_address_is_harmless() -> None:
    async def main() -> None:
        t = tt.TcpTransport(free_port(), lambda d, a: None, bind_host=HOST)
        await t.start()
        t.authenticate(PathAddr(Transport.TCP, "198.18.9.9", 1))
        await t.close()

    run(main())
