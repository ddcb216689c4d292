"""An aiohttp application served on a free loopback port, for tests that need a real HTTP or
WebSocket server: `runner, port = await start_on_loopback(app)`, then `await runner.cleanup()`."""

from __future__ import annotations

import ssl

from aiohttp import web

LOOPBACK = "127.0.0.1"


async def start_on_loopback(app: web.Application, ssl_context: ssl.SSLContext | None = None
                            ) -> tuple[web.AppRunner, int]:
    """app listening on 127.0.0.1 at a port the kernel picked (TLS with ssl_context); the
    runner (cleanup() stops it) and the port."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, 0, ssl_context=ssl_context).start()
    return runner, int(runner.addresses[0][1])
