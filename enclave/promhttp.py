"""Prometheus /metrics over HTTP on the caller's asyncio loop (agent and platform share it).

    parse_listen("127.0.0.1:9101") -> ("127.0.0.1", 9101)      ("[::1]:9101" for IPv6)
    await MetricsServer(registry, host, port).start()     GET /metrics -> Prometheus text

The exposition is rendered by prometheus_client (generate_latest) at each scrape, in the loop's
thread, so custom collectors read the process's state without locks. Any other path is 404.
"""

from __future__ import annotations

import ipaddress

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

METRICS_PATH = "/metrics"


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) -> (host, port); ValueError naming what is wrong."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"metrics address must be HOST:PORT, got {text!r}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"metrics port must be 1..65535, got {port}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)  # ValueError if not an IPv6 address
    elif ":" in host:
        raise ValueError(f"put an IPv6 metrics address in brackets: [{host}]:{port}")
    return host, port


class MetricsServer:
    """An aiohttp site serving `registry` at /metrics."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen (OSError if the address cannot be bound; nothing stays open then)."""
        app = web.Application()
        app.router.add_get(METRICS_PATH, self._metrics)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        if self.port == 0 and runner.addresses:  # tests: the port the kernel chose
            self.port = int(runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
