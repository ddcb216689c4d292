"""The agent's DNS with an overlay IPv6 (loopback stands in: 127.0.0.1 and ::1): AAAA answers
carry the derived overlay IPv6 of the agent and of an introduced peer (from its real
certificate), and a query that comes over IPv6 from inside the overlay's sources is answered,
one from outside them is not."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from pathlib import Path

import dns.message
import pytest

from enclave.agent.dns_resolved import ResolvedRoute
from enclave.agent.dns_server import AgentDns
from enclave.cert import public_key_raw
from enclave.cert.overlay6 import overlay_ip6
from tests.unit.dns.test_server import CA_KEY, HOST, cert, intro, verify

HOST6 = "::1"
OWN6 = ipaddress.IPv6Address(HOST6)


def _answers(wire: bytes | None) -> list[str]:
    assert wire is not None
    msg = dns.message.from_wire(wire)
    return [rd.to_text() for rrset in msg.answer for rd in rrset]


async def _ask(host: str, port: int, name: str, rdtype: str) -> bytes | None:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        await loop.sock_sendto(s, dns.message.make_query(name, rdtype).to_wire(), (host, port))
        try:
            return await asyncio.wait_for(loop.sock_recv(s, 4096), 1.0)
        except TimeoutError:
            return None


def _serve(tmp_path: Path, sources: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
           ) -> dict[str, bytes | None]:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    route = ResolvedRoute("lo", ipaddress.IPv4Address(HOST), runtime=tmp_path / "absent")
    d = AgentDns("4T9GP", ipaddress.IPv4Address(HOST), "lo", verify, port=0, route=route,
                 overlay=sources, address6=OWN6)
    d.introduce(intro("3ZM8D", cert("3ZM8D", "100.64.0.3")))

    async def main() -> dict[str, bytes | None]:
        assert await d.start()
        try:
            port = d.server.port
            return {
                "peer_aaaa_v4": await _ask(HOST, port, "3zm8d.enclave.", "AAAA"),
                "own_aaaa_v4": await _ask(HOST, port, "4t9gp.enclave.", "AAAA"),
                "peer_aaaa_v6": await _ask(HOST6, port, "3zm8d.enclave.", "AAAA"),
            }
        finally:
            await d.stop()

    return asyncio.run(main())


def test_aaaa_answers_carry_derived_overlay_ipv6_and_ipv6_queries_are_served(
        tmp_path: Path) -> None:
    got = _serve(tmp_path, (ipaddress.IPv4Network("127.0.0.0/8"),
                            ipaddress.IPv6Network("::1/128")))
    peer6 = str(overlay_ip6(public_key_raw(CA_KEY), ipaddress.IPv4Address("100.64.0.3")))
    assert _answers(got["peer_aaaa_v4"]) == [peer6]
    assert _answers(got["own_aaaa_v4"]) == [HOST6]
    # asked over IPv6 from the agent's own overlay IPv6: answered like its IPv4
    assert _answers(got["peer_aaaa_v6"]) == [peer6]


def test_an_ipv6_query_from_outside_the_sources_gets_nothing(tmp_path: Path) -> None:
    got = _serve(tmp_path, (ipaddress.IPv4Network("127.0.0.0/8"),
                            ipaddress.IPv6Network("fd00::/64")))
    assert got["peer_aaaa_v6"] is None
    assert _answers(got["peer_aaaa_v4"]) != []
