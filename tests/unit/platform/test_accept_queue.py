"""The API listener's accept loop (enclave.platform.accept_queue) with real sockets and TLS on
loopback: while the unauthenticated cap is full a new connection is not accepted (its TLS
handshake does not start; before, it was accepted and closed at once), it is served as soon as a
place frees, and a client that gave up while waiting in the backlog costs no TLS handshake."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

from aiohttp import web

from enclave.platform.accept_queue import QueueingSite, abandoned
from enclave.platform.frontdoor import ConnectionLimits, guarded_listener
from tests.support.tls import self_signed_pem, unverified_client_context
from tests.support.wait import wait_for_async


def test_abandoned_sees_a_client_that_left() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        stay = socket.create_connection(("127.0.0.1", port))
        left = socket.create_connection(("127.0.0.1", port))
        left.sendall(b"\x16\x03\x01 a ClientHello, say")
        left.close()
        try:
            first, _ = listener.accept()
            second, _ = listener.accept()
            with first, second:
                assert not abandoned(first)
                assert abandoned(second)
        finally:
            stay.close()


def test_a_full_node_leaves_new_connections_waiting(tmp_path: Path) -> None:
    cert, key = self_signed_pem(tmp_path, "platform")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)

    async def scenario() -> None:
        app = web.Application()
        runner = web.AppRunner(app)
        await runner.setup()
        limits = ConnectionLimits(max_total=64, max_unauth=1, max_per_address=1)
        sock = guarded_listener("127.0.0.1", 0, limits, "api", lifetime=None)
        port = sock.getsockname()[1]
        site = QueueingSite(runner, sock, ssl_context=server_tls, handshake_timeout=10)
        await site.start()
        try:
            tls = unverified_client_context()
            # the one place: a TLS connection that stays open
            _r1, w1 = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
            # the next one waits in the backlog: its TLS handshake does not complete
            second = asyncio.create_task(asyncio.open_connection("127.0.0.1", port, ssl=tls))
            # and one that gives up while waiting (TCP only, a few bytes, closed)
            gone = socket.create_connection(("127.0.0.1", port))
            gone.sendall(b"\x16\x03\x01 a ClientHello, say")
            await asyncio.sleep(1.0)
            assert not second.done()
            assert limits.refused == {}  # nothing was closed for being over the cap
            gone.close()
            w1.close()  # the place frees: the waiting connection is served
            _r2, w2 = await asyncio.wait_for(second, 10)
            w2.close()
            await wait_for_async(lambda: site.abandoned == 1, timeout=10,
                                 what="the abandoned connection closed unanswered")
        finally:
            await runner.cleanup()

    asyncio.run(scenario())
