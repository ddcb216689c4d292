"""enclave.agent.dns_server with `sources`: a query from outside the overlay gets no answer
(Linux delivers a packet for the overlay IP that arrives on any interface, so the listener can be
reached from the LAN); inside it, the usual answers. Loopback stands in for both: 127.0.0.0/8 as
the admitted range, then a range loopback is not in."""

from __future__ import annotations

import asyncio
import ipaddress

from enclave.agent.dns_resolver import NameTable
from enclave.agent.dns_server import DnsServer
from tests.unit.dns.test_server import HOST, query_wire, rcode_and_answers, tcp_frames, udp_ask


def _serve(sources: str) -> tuple[bytes | None, list[bytes]]:
    table = NameTable(owner="4T9GP")
    table.set("4T9GP", ipaddress.IPv4Address(HOST))
    table.set("3ZM8D", ipaddress.IPv4Address("100.64.0.3"))

    async def main() -> tuple[bytes | None, list[bytes]]:
        server = DnsServer(table, HOST, 0, sources=ipaddress.IPv4Network(sources))
        await server.start()
        try:
            udp = await udp_ask(server.port, query_wire(), timeout=0.5)
            try:
                tcp = await tcp_frames(server.port, query_wire())
            except ConnectionResetError:  # the server aborted the stream unread
                tcp = []
            if not tcp:
                assert server.tcp_connections == 0  # the refused stream holds no slot
            return udp, tcp
        finally:
            await server.close()

    return asyncio.run(main())


def test_a_source_inside_the_range_gets_answers() -> None:
    udp, tcp = _serve("127.0.0.0/8")
    assert udp is not None and rcode_and_answers(udp) == (0, ["100.64.0.3"])
    assert len(tcp) == 1 and rcode_and_answers(tcp[0]) == (0, ["100.64.0.3"])


def test_a_source_outside_the_range_gets_nothing_over_udp_or_tcp() -> None:
    udp, tcp = _serve("100.64.0.0/10")
    assert udp is None and tcp == []
