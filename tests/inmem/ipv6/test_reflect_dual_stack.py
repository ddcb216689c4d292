"""Reflection over both families: an agent-side Discovery on a dual-stack data socket against
the platform's reflector serving on [::] (both real, on loopback).

    agent data socket [::]:P --IPv4--> reflector 127.0.0.1:A,B  -> udp     127.0.0.1:P
                             --IPv6--> reflector [::1]:A,B      -> udp_alt [::1]:P
                                       (the platform URL https://[::1]:...)
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from enclave.agent.discovery import Discovery, DiscoveryState
from enclave.agent.udp_socket import any_address, data_socket, send_to
from enclave.cert.keys import generate_private_key, public_key_raw
from enclave.discovery.candidates import CandidateKind, NatBehaviour, Transport
from enclave.discovery.dualstack import unmapped_addr
from enclave.platform.discovery import DiscoveryService, Reflector
from tests.support.proc import free_port

pytestmark = [pytest.mark.inmem]


class _Feed(asyncio.DatagramProtocol):
    def __init__(self, discovery: Discovery) -> None:
        self.discovery = discovery

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.discovery.feed(data, unmapped_addr(addr))


def test_dual_stack_agent_learns_both_mappings() -> None:
    probe = data_socket()
    if probe.family != socket.AF_INET6:
        probe.close()
        pytest.skip("no IPv6 in this kernel")
    probe.close()

    async def main() -> DiscoveryState:
        key = generate_private_key()
        ports = (free_port(), free_port())
        service = DiscoveryService(Reflector(lambda n: public_key_raw(key) if n == "AAAAA"
                                             else None), "::", ports, alt_address="")
        await service.start()
        sock = data_socket()
        sock.bind((any_address(sock), 0))
        sock.setblocking(False)
        port = sock.getsockname()[1]
        changes: list[DiscoveryState] = []
        disc = Discovery("AAAAA", key, lambda d, a: send_to(sock, d, a), udp_port=port,
                         tcp_port=port, on_change=changes.append,
                         platform_urls=lambda: [f"https://[::1]:{ports[0]}"])
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Feed(disc), sock=sock)
        try:
            await disc.check("127.0.0.1", list(ports), None)
        finally:
            transport.close()
            await service.stop()
        assert changes and changes[-1] is disc.state
        return disc.state

    st = asyncio.run(main())
    port = st.udp[0][1] if st.udp[0] else 0
    assert st.udp == [("127.0.0.1", port)] * 2  # told as IPv4, not ::ffff:127.0.0.1
    assert st.udp_alt == [("::1", port)] * 2
    assert st.nat_alt is NatBehaviour.ENDPOINT_INDEPENDENT  # ::1 is not an interface address
    cands = st.candidates(port, port)
    assert any(c.addr == (Transport.UDP, "::1", port) and c.kind is CandidateKind.PUBLIC
               for c in cands)
