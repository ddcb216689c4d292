"""PCP and NAT-PMP answers count only from the gateway's own address and port: portmap.exchange
talks over a socket connected to the gateway, so a well-formed reply (right nonce, right port)
sent first by another host, or by the gateway's address from another port, never reaches it."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from enclave.agent.portmap import exchange
from enclave.discovery import portmap_wire as pw

NONCE = bytes(range(12))
PORT = 51820


def _pcp_reply(external_port: int) -> bytes:
    header = bytes((2, 0x81, 0, 0)) + (600).to_bytes(4, "big") + (1).to_bytes(4, "big")
    payload = (NONCE + bytes((17, 0, 0, 0)) + PORT.to_bytes(2, "big")
               + external_port.to_bytes(2, "big") + pw.ip_to_16("198.18.1.1"))
    return header + bytes(12) + payload


class _Gateway(asyncio.DatagramProtocol):
    """On each request: the strangers send their forged replies to the client first, then the
    gateway answers itself."""

    def __init__(self, strangers: list[socket.socket]) -> None:
        self.strangers = strangers
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        for i, s in enumerate(self.strangers):
            s.sendto(_pcp_reply(6000 + i), addr)
        self.transport.sendto(_pcp_reply(4500), addr)


def test_a_reply_from_anyone_but_the_gateway_is_never_read() -> None:
    other_host = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other_host.bind(("127.0.0.2", 0))
    other_port = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other_port.bind(("127.0.0.1", 0))

    async def main() -> pw.Reply | None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Gateway([other_host, other_port]), local_addr=("127.0.0.1", 0))
        try:
            return await exchange(
                "127.0.0.1", lambda own: pw.encode_pcp_map(NONCE, own, PORT, 600),
                lambda d: pw.decode_pcp_map(d, NONCE, PORT),
                port=transport.get_extra_info("sockname")[1])
        finally:
            transport.close()

    try:
        got = asyncio.run(main())
    finally:
        other_host.close()
        other_port.close()
    assert got == pw.Granted("198.18.1.1", 4500, 600, 1)  # the gateway's, sent last
