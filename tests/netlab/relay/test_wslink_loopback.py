"""enclave.wslink.WsLink over real TLS on loopback: the agent's client end against aiohttp's own
WebSocket server, and the platform's relay (serve_ws, which hands the connection to a WsLink
after aiohttp's upgrade) against WsLink clients: backpressure instead of unbounded buffers,
frames split over many TLS records, and malformed frames closed with their RFC 6455 code."""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from enclave.platform.relay import mint_ticket, verify_ticket
from enclave.platform.relay_ws import RelayWs, serve_ws
from enclave.proto.relay_batch import MAX_MESSAGE, RELAY_WS_PATH
from enclave.proto.wire import (
    MSG_RELAY_DATA,
    MSG_RELAY_REGISTER,
    MSG_RELAY_REGISTERED,
    pack_relay_header,
)
from enclave.proto.wsframe import CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG, ZERO_MASK, frame_header
from enclave.wslink import WsHandshakeError, WsLink, open_client
from tests.support.http_serve import start_on_loopback
from tests.support.tls import self_signed_pem, unverified_client_context

KEY = bytes(range(32))
LO = "127.0.0.1"


def _tls(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = self_signed_pem(tmp, "wslink-test")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    return server, unverified_client_context()


@asynccontextmanager
async def _serving(app: web.Application, ctx: ssl.SSLContext) -> AsyncIterator[int]:
    runner, port = await start_on_loopback(app, ctx)
    try:
        yield port
    finally:
        await runner.cleanup()


class _Inbox:
    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.size = 0

    def __call__(self, op: int, payload: memoryview | bytes) -> None:
        self.got.append(bytes(payload))
        self.size += len(payload)


def _has_tls(transport: asyncio.Transport) -> None:
    assert transport.get_extra_info("ssl_object") is not None


async def _client(port: int, ctx: ssl.SSLContext, inbox: Callable[[int, memoryview | bytes], None],
                  path: str = RELAY_WS_PATH) -> WsLink:
    link = WsLink(inbox, client=True, max_message=MAX_MESSAGE)
    return await open_client(LO, port, netloc=f"{LO}:{port}", path=path, ssl_ctx=ctx,
                             link=link, check=_has_tls, timeout=10)


async def _until(check: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def test_client_end_against_aiohttps_server(tmp_path: Path) -> None:
    """aiohttp's server takes the zero-masked frames, gets a pong for its ping, echoes a 1 MiB
    message back whole, and its close code arrives."""
    server_ctx, client_ctx = _tls(tmp_path)
    seen: list[tuple[aiohttp.WSMsgType, bytes]] = []

    async def echo(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False, max_msg_size=MAX_MESSAGE)
        await ws.prepare(request)
        async for msg in ws:
            seen.append((msg.type, bytes(msg.data)))
            if msg.type == aiohttp.WSMsgType.PONG:
                continue
            if msg.type != aiohttp.WSMsgType.BINARY or msg.data == b"bye":
                await ws.close(code=4001)
                break
            await ws.send_bytes(msg.data)
            await ws.ping(msg.data[:3])
        return ws

    async def body() -> None:
        app = web.Application()
        app.router.add_get("/echo", echo)
        async with _serving(app, server_ctx) as port:
            with pytest.raises(WsHandshakeError):  # no WebSocket there: a 404, not a 101
                await _client(port, client_ctx, _Inbox(), path="/nothing")
            inbox = _Inbox()
            link = await _client(port, client_ctx, inbox, path="/echo")
            try:
                big = os.urandom(1 << 20)  # (aiohttp takes up to max_msg_size - 1)
                for m in (b"a", b"b" * 70000, big):
                    assert link.send(m)
                await _until(lambda: len(inbox.got) == 3 and len(seen) == 6, "three echoes")
                assert inbox.got == [b"a", b"b" * 70000, big]
                assert [m for t, m in seen if t == aiohttp.WSMsgType.BINARY] == inbox.got
                assert sorted(m for t, m in seen if t == aiohttp.WSMsgType.PONG) == sorted(
                    [b"a", b"bbb", big[:3]])  # every ping answered with its payload
                assert link.send(b"bye")
                await asyncio.wait_for(link.done.wait(), 10)
                assert link.close_code == 4001
            finally:
                link.abort()  # (a failed assertion must not leave the server waiting)

    asyncio.run(asyncio.wait_for(body(), 60))


async def _registered(port: int, ctx: ssl.SSLContext) -> tuple[WsLink, WsLink, _Inbox, _Inbox]:
    ix, iy = _Inbox(), _Inbox()
    x, y = await _client(port, ctx, ix), await _client(port, ctx, iy)
    exp = int(time.time()) + 600
    assert x.send(pack_relay_header(MSG_RELAY_REGISTER, 7), mint_ticket(KEY, "XXXXX", "YYYYY", exp))
    assert y.send(pack_relay_header(MSG_RELAY_REGISTER, 3), mint_ticket(KEY, "YYYYY", "XXXXX", exp))
    await _until(lambda: ix.got and iy.got, "both registered")
    assert ix.got.pop()[0] == MSG_RELAY_REGISTERED and iy.got.pop()[0] == MSG_RELAY_REGISTERED
    iy.size = ix.size = 0
    return x, y, ix, iy


def test_relay_pushes_back_reassembles_split_frames_and_closes_bad_ones(tmp_path: Path) -> None:
    server_ctx, client_ctx = _tls(tmp_path)
    relay = RelayWs(lambda raw, now: verify_ticket(KEY, raw, now))

    async def handler(request: web.Request) -> web.StreamResponse:
        return await serve_ws(relay, request)

    async def shutdown(app: web.Application) -> None:
        relay.close_all()  # as the platform's relay does: ends the taken-over connections

    async def body() -> None:
        app = web.Application()
        app.router.add_get(RELAY_WS_PATH, handler)
        app.on_shutdown.append(shutdown)
        async with _serving(app, server_ctx) as port:
            x, y, _ix, iy = await _registered(port, client_ctx)
            head = pack_relay_header(MSG_RELAY_DATA, 7)
            # 1. Y reads nothing: the relay stops reading X, so X's own buffer fills (paused)
            #    instead of anything growing without bound; then Y reads and all of it arrives
            assert y.transport is not None
            y.transport.pause_reading()
            chunk = os.urandom(256 * 1024)
            sent = 0
            while not x.paused:
                assert sent < 512, "X never paused: the relay buffered without bound"
                assert x.send(head, chunk)
                sent += 1
                await asyncio.sleep(0)
            assert relay.forwarded < sent
            y.transport.resume_reading()
            await _until(lambda: len(iy.got) == sent, f"{sent} messages at Y")
            assert all(m[8:] == chunk and m[:8] == pack_relay_header(MSG_RELAY_DATA, 3)
                       for m in iy.got)
            # 2. one message written a few bytes at a time (many TLS records, partial reads)
            iy.got.clear()
            body_ = os.urandom(3000)
            assert x.transport is not None
            frame = frame_header(0x2, 8 + len(body_), ZERO_MASK) + head + body_
            for i in range(0, len(frame), 5):
                x.transport.write(frame[i:i + 5])
                await asyncio.sleep(0)
            await _until(lambda: len(iy.got) == 1, "the split message at Y")
            assert iy.got[0][8:] == body_
            # 3. malformed frames: a close with the code, and the connection ends
            for bad, code in ((b"\xc2\x80" + ZERO_MASK, CLOSE_PROTOCOL_ERROR),  # RSV1 set
                              (b"\x82\xff" + (MAX_MESSAGE + 1).to_bytes(8, "big"), CLOSE_TOO_BIG),
                              (frame_header(0x2, 4), CLOSE_PROTOCOL_ERROR)):  # unmasked
                z = await _client(port, client_ctx, _Inbox())
                assert z.transport is not None
                z.transport.write(bad)
                await asyncio.wait_for(z.done.wait(), 10)
                assert z.close_code == code, (bad, z.close_code)
            # the relay still forwards for the others
            iy.got.clear()
            assert x.send(head, b"\x00\x01z")
            await _until(lambda: len(iy.got) == 1, "a message after the bad clients")
            x.close()
            y.close()
            await asyncio.wait_for(asyncio.gather(x.done.wait(), y.done.wait()), 10)
            await _until(lambda: len(relay) == 0, "registrations gone with the connections")

    asyncio.run(asyncio.wait_for(body(), 120))


def test_heartbeat_keeps_a_quiet_link_and_ends_a_silent_peer() -> None:
    """Two links that exchange nothing stay up on their pings and pongs; a link whose peer
    never answers (a TCP socket that reads nothing) is aborted after three heartbeats."""

    class Mute(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            pass  # never answers a ping

    async def body() -> None:
        loop = asyncio.get_running_loop()
        beat = 0.5  # (a loop stalled for three of them on a loaded machine would abort both)
        served: list[WsLink] = []

        def server_link() -> WsLink:
            served.append(WsLink(_Inbox(), client=False, max_message=1024, heartbeat=beat))
            return served[-1]

        server = await loop.create_server(server_link, LO, 0)
        mute = await loop.create_server(Mute, LO, 0)
        try:
            port = server.sockets[0].getsockname()[1]
            _t, quiet = await loop.create_connection(
                lambda: WsLink(_Inbox(), client=True, max_message=1024, heartbeat=beat), LO, port)
            mute_port = mute.sockets[0].getsockname()[1]
            _t2, lonely = await loop.create_connection(
                lambda: WsLink(_Inbox(), client=True, max_message=1024, heartbeat=beat), LO,
                mute_port)
            await asyncio.wait_for(lonely.done.wait(), 20 * beat)  # aborted: no answer
            await asyncio.sleep(8 * beat)  # more than three heartbeats with nothing to send
            assert not quiet.closing and served and not served[0].closing
            quiet.close()
            await asyncio.wait_for(served[0].done.wait(), 10)
        finally:
            server.close()
            mute.close()

    asyncio.run(asyncio.wait_for(body(), 60))
