"""The agent's UDP data socket as an asyncio DatagramProtocol (thin: no protocol logic).

The socket is created and bound by the Agent (0.0.0.0:<data port>) and shared: enclave peer
traffic, relay traffic and discovery reflector replies all arrive here; the ConnectionManager
demultiplexes them by the type byte and the source address.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any, cast

log = logging.getLogger("enclave.agent.udp")

Addr = tuple[str, int]
OnDatagram = Callable[[bytes, Addr], None]


class UdpTransport(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: OnDatagram) -> None:
        self._on_datagram = on_datagram
        self._transport: asyncio.DatagramTransport | None = None
        self.rx_packets = 0
        self.tx_packets = 0
        self.errors = 0

    async def start(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, sock=sock)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.rx_packets += 1
        try:
            self._on_datagram(data, (str(addr[0]), int(addr[1])))
        except Exception:  # one bad datagram must never stop the socket
            log.exception("error while handling a datagram from %s", addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable etc. from punching towards closed ports: expected, ignored
        self.errors += 1

    def send(self, data: bytes, addr: Addr) -> None:
        if self._transport is None:
            return
        self.tx_packets += 1
        self._transport.sendto(data, addr)

    @property
    def local_port(self) -> int | None:
        if self._transport is None:
            return None
        return int(self._transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
