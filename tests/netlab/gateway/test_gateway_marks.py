"""The agent's TCP data sockets carry the gateway bypass mark, so a TCP tunnel to an address
inside a gateway's routes is not routed into the tunnel itself.

    site a (routed LAN 198.19.1.0/24)
      a1 198.19.1.11: ip rule pref 5180 not fwmark SOCKET_MARK lookup 51820
                      table 51820: blackhole 198.19.1.12/32   (stands for "via enclave0")
      a2 198.19.1.12: TcpTransport listener

An unmarked socket on a1 cannot reach a2 (it hits the blackhole: what the gateway route would do
to the tunnel's own packets); the TcpTransport's connector and a2's accepted stream are marked
and carry frames both ways. The relay rides the UDP data socket, marked by AgentGateway.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from enclave.agent.transport_tcp import TcpTransport
from enclave.discovery.candidates import PathAddr, Transport
from enclave.netlab import NatType, Site, Topology
from enclave.policy.gateway import ROUTE_TABLE, RULE_PRIORITY, SOCKET_MARK
from tests.support.lab import LabFactory

pytestmark = [pytest.mark.netlab, pytest.mark.timeout(60)]
PORT = 51999


def _marks(t: TcpTransport) -> list[int]:
    out = []
    for s in list(t._all):
        assert s.transport is not None
        sock = s.transport.get_extra_info("socket")
        out.append(sock.getsockopt(socket.SOL_SOCKET, socket.SO_MARK))
    return out


def test_tcp_data_sockets_are_marked_and_bypass_gateway_routes(lab_factory: LabFactory) -> None:
    lab = lab_factory(Topology(sites=[Site("a", nat=NatType.NONE, hosts=2)]))
    a1, a2 = lab.host("a1"), lab.host("a2")
    a1.run(["ip", "rule", "add", "pref", str(RULE_PRIORITY), "not", "fwmark",
            f"{SOCKET_MARK:#x}", "lookup", str(ROUTE_TABLE)], check=True)
    a1.run(["ip", "route", "add", "blackhole", f"{a2.ip}/32", "table", str(ROUTE_TABLE)],
           check=True)

    # an unmarked socket follows the gateway table: the blackhole
    plain = a1.socket(socket.AF_INET, socket.SOCK_STREAM)
    plain.settimeout(2.0)
    with pytest.raises(OSError):
        plain.connect((str(a2.ip), PORT))
    plain.close()

    got: dict[str, list[bytes]] = {"a1": [], "a2": []}
    ready = {"a2": False}
    result: dict[str, object] = {}

    async def server() -> None:
        def on_frame(data: bytes, addr: PathAddr) -> None:
            got["a2"].append(data)
            result["a2_marks"] = _marks(srv)  # while the accepted stream is open
            srv.send(b"pong", addr)

        srv = TcpTransport(PORT, on_frame)
        await srv.start()
        ready["a2"] = True
        try:
            for _ in range(200):
                if got["a2"]:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
        finally:
            await srv.close()

    async def client() -> None:
        cli = TcpTransport(PORT, lambda d, addr: got["a1"].append(d))
        await cli.start()
        try:
            assert cli._server is not None
            listener = cli._server.sockets[0]
            result["a1_listener"] = listener.getsockopt(socket.SOL_SOCKET, socket.SO_MARK)
            addr = PathAddr(Transport.TCP, str(a2.ip), PORT)
            for _ in range(200):
                cli.send(b"ping", addr)
                if got["a1"]:
                    break
                await asyncio.sleep(0.02)
            result["a1_marks"] = _marks(cli)
        finally:
            await cli.close()

    import threading

    t = threading.Thread(target=lambda: a2.call(lambda: asyncio.run(server()), timeout=20))
    t.start()
    try:
        deadline = 200
        while not ready["a2"] and deadline:
            deadline -= 1
            t.join(0.02)
        a1.call(lambda: asyncio.run(client()), timeout=20)
    finally:
        t.join(25)
    assert b"ping" in got["a2"] and got["a1"] == [b"pong"], got
    assert result["a1_listener"] == SOCKET_MARK
    assert result["a1_marks"] == [SOCKET_MARK]
    assert result["a2_marks"] == [SOCKET_MARK]  # accepted streams inherit the listener's mark
