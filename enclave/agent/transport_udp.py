"""The agent's UDP data socket as an asyncio DatagramProtocol (thin: no protocol logic).

The socket is created and bound by the Agent ([::]:<data port>, dual-stack: enclave.agent.
udp_socket) and shared: enclave peer traffic, relay traffic and discovery reflector replies all
arrive here; the ConnectionManager demultiplexes them by the type byte and the source address.
IPv4 senders are handed on as a.b.c.d (not ::ffff:a.b.c.d) and IPv4 destinations mapped on the
way out (enclave.discovery.dualstack).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any, cast

from enclave.discovery.dualstack import sendable, unmapped_addr

log = logging.getLogger("enclave.agent.udp")

Addr = tuple[str, int]
OnDatagram = Callable[[bytes, Addr], None]


class UdpTransport(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: OnDatagram) -> None:
        self._on_datagram = on_datagram
        self._transport: asyncio.DatagramTransport | None = None
        self._v6 = False  # the socket is AF_INET6 (dual-stack): IPv4 goes out as ::ffff:a.b.c.d
        self.rx_packets = 0
        self.tx_packets = 0
        self.errors = 0

    async def start(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, sock=sock)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        self._v6 = sock is not None and sock.family == socket.AF_INET6

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.rx_packets += 1
        try:
            self._on_datagram(data, unmapped_addr(addr))
        except Exception:  # one bad datagram must never stop the socket
            log.exception("error while handling a datagram from %s", addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable etc. from punching towards closed ports: expected, ignored
        self.errors += 1

    def send(self, data: bytes, addr: Addr) -> None:
        if self._transport is None:
            return
        self.tx_packets += 1
        self._transport.sendto(data, sendable(addr, self._v6))

    @property
    def local_port(self) -> int | None:
        if self._transport is None:
            return None
        return int(self._transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
