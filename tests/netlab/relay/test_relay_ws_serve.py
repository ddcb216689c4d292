"""serve_ws (the relay over TLS's handler) on a loopback aiohttp server: a client that offers
permessage-deflate does not get it (the relay never inflates or deflates ciphertext), and a
batch crosses as one message with only the channel swapped."""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp
from aiohttp import web

from enclave.platform.relay import mint_ticket, verify_ticket
from enclave.platform.relay_ws import RelayWs, serve_ws
from enclave.proto.relay_batch import RELAY_WS_PATH, pack_batch
from enclave.proto.wire import (
    MSG_RELAY_DATA,
    MSG_RELAY_REGISTER,
    MSG_RELAY_REGISTERED,
    pack_relay_header,
)
from tests.support.http_serve import start_on_loopback

KEY = bytes(range(32))


async def _register(ws: aiohttp.ClientWebSocketResponse, ch: int, src: str, dst: str) -> None:
    await ws.send_bytes(pack_relay_header(MSG_RELAY_REGISTER, ch)
                        + mint_ticket(KEY, src, dst, int(time.time()) + 600))
    msg = await ws.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.BINARY and msg.data[0] == MSG_RELAY_REGISTERED


def test_no_deflate_and_one_message_per_batch() -> None:
    async def body() -> None:
        relay = RelayWs(lambda raw, now: verify_ticket(KEY, raw, now))

        async def handler(request: web.Request) -> web.StreamResponse:
            return await serve_ws(relay, request)

        app = web.Application()
        app.router.add_get(RELAY_WS_PATH, handler)
        runner, port = await start_on_loopback(app)
        url = f"http://127.0.0.1:{port}{RELAY_WS_PATH}"
        try:
            async with aiohttp.ClientSession() as http:
                x = await http.ws_connect(url, compress=15)
                y = await http.ws_connect(url, compress=15)
                assert x.compress == 0 and y.compress == 0  # offered, not taken
                await _register(x, 7, "XXXXX", "YYYYY")
                await _register(y, 3, "YYYYY", "XXXXX")
                batch = pack_batch([os.urandom(1400)] * 45)
                await x.send_bytes(pack_relay_header(MSG_RELAY_DATA, 7) + batch)
                msg = await y.receive(timeout=10)
                assert msg.type == aiohttp.WSMsgType.BINARY
                assert msg.data == pack_relay_header(MSG_RELAY_DATA, 3) + batch
                assert relay.forwarded == 1
                await x.close()
                await y.close()
        finally:
            await runner.cleanup()

    asyncio.run(asyncio.wait_for(body(), 30))
