"""Connections over the per-address cap (enclave.platform.address_queue) with real sockets and TLS
on loopback: one over the cap waits, accepted but untouched, for a place of its own address and
is served when one frees (before, it was closed at once); what one address holds is bounded,
in number and in time, and never keeps another address out; a client that gave up while held
costs no TLS handshake."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from enclave.platform.accept_queue import HOLD_PER_ADDRESS, QueueingSite
from enclave.platform.frontdoor import PER_ADDRESS, ConnectionLimits, guarded_listener
from tests.support.tls import self_signed_pem, unverified_client_context
from tests.support.wait import wait_for_async

LO = "127.0.0.1"


@asynccontextmanager
async def _site(tmp_path: Path, limits: ConnectionLimits,
                timeout: float = 10.0) -> AsyncIterator[tuple[QueueingSite, int]]:
    cert, key = self_signed_pem(tmp_path, "platform")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    runner = web.AppRunner(web.Application())
    await runner.setup()
    sock = guarded_listener(LO, 0, limits, "api", lifetime=None)
    site = QueueingSite(runner, sock, ssl_context=server_tls, handshake_timeout=timeout)
    await site.start()
    try:
        yield site, sock.getsockname()[1]
    finally:
        await runner.cleanup()


async def _tls(port: int, source: str = LO) -> asyncio.Task[tuple[asyncio.StreamReader,
                                                                  asyncio.StreamWriter]]:
    """A TLS connection being opened (a task: it completes once the node serves it)."""
    task = asyncio.create_task(asyncio.open_connection(
        LO, port, ssl=unverified_client_context(), local_addr=(source, 0)))
    await asyncio.sleep(0.2)
    return task


async def _closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """The node closed this raw TCP connection within `timeout` (EOF or reset)."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    try:
        data = await asyncio.wait_for(loop.sock_recv(sock, 1), timeout)
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return data == b""


def test_one_over_the_cap_waits_for_a_place_of_its_address(tmp_path: Path) -> None:
    async def scenario() -> None:
        limits = ConnectionLimits(max_total=64, max_unauth=8, max_per_address=1)
        async with _site(tmp_path, limits) as (site, port):
            first = await asyncio.wait_for(await _tls(port), 10)
            second = await _tls(port)
            await asyncio.sleep(0.5)
            assert not second.done()  # its TLS has not started
            assert limits.refused == {} and limits.held == 1 and len(site.held) == 1
            assert limits.total == 2  # its descriptor is counted in the total
            first[1].close()  # the address's place frees: the held connection gets it
            _r, w = await asyncio.wait_for(second, 10)
            assert limits.held == 0 and site.held.served == 1 and limits.refused == {}
            w.close()

    asyncio.run(scenario())


def test_what_one_address_holds_is_bounded_and_keeps_no_other_out(tmp_path: Path) -> None:
    async def scenario() -> None:
        limits = ConnectionLimits(max_total=64, max_unauth=8, max_per_address=1)
        async with _site(tmp_path, limits) as (site, port):
            first = await asyncio.wait_for(await _tls(port), 10)
            held = [await _tls(port) for _ in range(HOLD_PER_ADDRESS)]
            assert limits.held == HOLD_PER_ADDRESS and limits.refused == {}
            # one more from the same address: no room to hold it, closed at once as before
            extra = socket.create_connection((LO, port))
            try:
                assert await _closed_by_peer(extra, 5)
            finally:
                extra.close()
            assert limits.refused == {PER_ADDRESS: 1}
            # another address is served at once
            other = await asyncio.wait_for(await _tls(port, "127.0.0.2"), 10)
            other[1].close()
            # the held ones get the address's place one after another, oldest first
            first[1].close()
            for task in held:
                _r, w = await asyncio.wait_for(task, 10)
                assert not any(t.done() for t in held[held.index(task) + 1:])
                w.close()
            assert site.held.served == HOLD_PER_ADDRESS and limits.held == 0

    asyncio.run(scenario())


def test_a_held_connection_is_refused_after_the_timeout(tmp_path: Path) -> None:
    async def scenario() -> None:
        limits = ConnectionLimits(max_total=64, max_unauth=8, max_per_address=1)
        async with _site(tmp_path, limits, timeout=1.0) as (site, port):
            first = await asyncio.wait_for(await _tls(port), 10)
            waiting = socket.create_connection((LO, port))
            try:
                await wait_for_async(lambda: limits.held == 1, timeout=5, what="held")
                assert await _closed_by_peer(waiting, 5)  # after about a second
            finally:
                waiting.close()
            assert limits.held == 0 and limits.refused == {PER_ADDRESS: 1}
            assert site.held.served == 0
            first[1].close()

    asyncio.run(scenario())


def test_a_client_that_left_while_held_costs_no_handshake(tmp_path: Path) -> None:
    async def scenario() -> None:
        limits = ConnectionLimits(max_total=64, max_unauth=8, max_per_address=1)
        async with _site(tmp_path, limits) as (site, port):
            first = await asyncio.wait_for(await _tls(port), 10)
            gone = socket.create_connection((LO, port))
            gone.sendall(b"\x16\x03\x01 a ClientHello, say")
            await wait_for_async(lambda: limits.held == 1, timeout=5, what="held")
            gone.close()
            await asyncio.sleep(0.2)
            first[1].close()
            await wait_for_async(lambda: site.abandoned == 1, timeout=10,
                                 what="the held connection closed unanswered")
            assert site.held.served == 0 and limits.held == 0 and limits.total == 0

    asyncio.run(scenario())


def test_a_held_connection_that_leaves_frees_its_place_in_the_total(tmp_path: Path) -> None:
    """A held connection counts in the total (its descriptor): when it leaves without a place
    (timed out here; a client that gave up likewise), the accept loop, which stopped at a full
    total, takes the next connection at once, not only when a counted one closes."""
    async def scenario() -> None:
        limits = ConnectionLimits(max_total=4, max_unauth=8, max_per_address=1)
        async with _site(tmp_path, limits, timeout=1.0) as (site, port):
            first = await asyncio.wait_for(await _tls(port), 10)
            waiting = [socket.create_connection((LO, port)) for _ in range(2)]
            try:
                await wait_for_async(lambda: limits.held == 2, timeout=5, what="held")
                second = await asyncio.wait_for(await _tls(port, "127.0.0.2"), 10)
                assert limits.total == limits.max_total  # the accept loop waits for room
                for sock in waiting:
                    assert await _closed_by_peer(sock, 5)  # held past the timeout: refused
            finally:
                for sock in waiting:
                    sock.close()
            assert limits.held == 0 and limits.total == 2
            third = await asyncio.wait_for(await _tls(port, "127.0.0.3"), 10)
            assert site.held.served == 0
            for _r, w in (first, second, third):
                w.close()

    asyncio.run(scenario())


def test_a_newcomer_of_an_address_waits_behind_its_held_ones(tmp_path: Path) -> None:
    """FIFO per address: a place that frees goes to the address's oldest held connection, not
    to a newer connection of that address that waited in the backlog (here: while the
    unauthenticated cap in total was reached)."""
    async def scenario() -> None:
        limits = ConnectionLimits(max_total=64, max_unauth=2, max_per_address=1)
        async with _site(tmp_path, limits) as (site, port):
            first = await asyncio.wait_for(await _tls(port), 10)
            held = await _tls(port)
            assert limits.held == 1
            other = await asyncio.wait_for(await _tls(port, "127.0.0.2"), 10)
            assert not site.has_room()  # two unauthenticated: the accept loop waits
            newer = await _tls(port)  # from the held one's address, in the backlog
            first[1].close()
            _r, w = await asyncio.wait_for(held, 10)  # the oldest gets the place
            assert site.held.served == 1 and not newer.done()
            assert limits.held == 1  # the newer one is held in its turn
            w.close()
            _r, w2 = await asyncio.wait_for(newer, 10)
            assert site.held.served == 2
            for writer in (w2, other[1]):
                writer.close()

    asyncio.run(scenario())
