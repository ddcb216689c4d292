"""The agent's port-mapping shell: the default gateway from /proc/net/route, the request/reply
exchange over a real loopback UDP socket (junk ignored, the answer taken, an unreachable port
ends it), and which mapped address becomes a candidate."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

from enclave.agent.portmap import Method, PortMapper, PortMapping, default_gateway, exchange
from enclave.discovery import portmap_wire as pw
from enclave.discovery.candidates import CandidateKind, NatBehaviour, PathAddr, Transport

ROUTES = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
eth1\t00000000\t011313C6\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth1\t001313C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
broken line
eth2\t00000000\tnothex!!\t0003\t0\t0\t1\t00000000\t0\t0\t0
"""


def test_default_gateway_is_the_lowest_metric_default_route(tmp_path: Path) -> None:
    routes = tmp_path / "route"
    routes.write_text(ROUTES)
    assert default_gateway(str(routes)) == "198.19.19.1"  # metric 100 beats 600


def test_no_default_route_no_gateway(tmp_path: Path) -> None:
    routes = tmp_path / "route"
    routes.write_text(ROUTES.splitlines()[0] + "\neth1\t001313C6\t00000000\t0001\t0\t0\t0"
                      "\t00FFFFFF\t0\t0\t0\n")
    assert default_gateway(str(routes)) is None
    assert default_gateway(str(tmp_path / "missing")) is None


class _Router(asyncio.DatagramProtocol):
    """Answers each request with junk, a reply for another mapping, then the real reply."""

    def __init__(self, replies: list[bytes]) -> None:
        self.replies = replies
        self.requests: list[bytes] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.requests.append(data)
        for reply in self.replies:
            self.transport.sendto(reply, addr)


def _pcp_reply(nonce: bytes, port: int, external_port: int = 4500) -> bytes:
    header = bytes((2, 0x81, 0, 0)) + (600).to_bytes(4, "big") + (1).to_bytes(4, "big")
    payload = (nonce + bytes((17, 0, 0, 0)) + port.to_bytes(2, "big")
               + external_port.to_bytes(2, "big") + pw.ip_to_16("198.18.1.1"))
    return header + bytes(12) + payload


def test_exchange_ignores_junk_and_takes_the_answer() -> None:
    nonce, other = bytes(range(12)), bytes(range(1, 13))

    async def main() -> tuple[pw.Reply | None, list[bytes]]:
        loop = asyncio.get_running_loop()
        junk = [b"", b"\x02", bytes(64), _pcp_reply(other, 51820, 9999),
                _pcp_reply(nonce, 51821, 9999)]
        transport, router = await loop.create_datagram_endpoint(
            lambda: _Router([*junk, _pcp_reply(nonce, 51820)]), local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        try:
            got = await exchange(
                "127.0.0.1", lambda own: pw.encode_pcp_map(nonce, own, 51820, 600),
                lambda d: pw.decode_pcp_map(d, nonce, 51820), port=port)
        finally:
            transport.close()
        return got, router.requests

    got, requests = asyncio.run(main())
    assert got == pw.Granted("198.18.1.1", 4500, 600, 1)
    assert len(requests) == 1  # answered at once: no retransmission
    assert requests[0][8:24] == pw.ip_to_16("127.0.0.1")  # the client's own address


def test_exchange_ends_when_nobody_serves_the_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: the kernel answers port unreachable

    async def main() -> object:
        return await exchange("127.0.0.1", lambda _own: b"\x00\x00", pw.decode_natpmp_address,
                              port=port)

    assert asyncio.run(main()) is None


def _mapper(mapping: PortMapping | None, gateway: str | None = "198.19.1.1") -> PortMapper:
    pm = PortMapper(51820, lambda: None, gateway=lambda: gateway)
    pm.mapping = mapping
    return pm


def test_mapped_address_is_a_public_candidate_without_nat_when_the_reflector_agrees() -> None:
    m = PortMapping(Method.PCP, "198.18.1.1", 4500, 51820, 600, time.time())
    [cand] = _mapper(m).candidates({"198.18.1.1"})
    assert cand.addr == PathAddr(Transport.UDP, "198.18.1.1", 4500)
    assert cand.kind is CandidateKind.PUBLIC and cand.nat is NatBehaviour.NONE
    # behind a second NAT the router's external address is not where the internet sees us
    assert _mapper(m).candidates({"198.18.2.1"}) == []
    assert _mapper(None).candidates({"198.18.1.1"}) == []


def test_no_gateway_no_request() -> None:
    pm = _mapper(None, gateway=None)
    assert asyncio.run(pm.request()) is None
    assert pm.last_error == "no IPv4 default gateway"
    assert pm.describe()["mapping"] is None
