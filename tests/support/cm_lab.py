"""Agents inside netlab namespaces, all in this process and one event loop.

Every socket an agent owns is opened inside its host's namespace (enclave.netlab.netns), so its
packets cross the lab's real NAT routers; the ConnectionManager does not know the difference.
A tiny reflector on a public host tells each agent its public UDP/TCP mapping (what the
platform's discovery service does in the product), over the agent's own data socket (the reply
reaches the agent through ConnectionManager.on_unhandled).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from contextlib import suppress
from typing import Any

from enclave.discovery import Candidate, CandidateKind, NatBehaviour, PathAddr, Transport
from enclave.netlab import Host, NatType
from enclave.netlab.netns import socket_in_netns
from tests.support.cm_agent import Agent, make_agent
from tests.support.pki import Pki
from tests.support.wait import wait_for_async

REFLECT_UDP = 3478
REFLECT_TCP = 3478
RELAY_PORT = 3479

NAT_BEHAVIOUR = {
    NatType.NONE: NatBehaviour.NONE,
    NatType.FULL_CONE: NatBehaviour.ENDPOINT_INDEPENDENT,
    NatType.RESTRICTED: NatBehaviour.ENDPOINT_INDEPENDENT,
    NatType.PORT_RESTRICTED: NatBehaviour.ENDPOINT_INDEPENDENT,
    NatType.SYMMETRIC: NatBehaviour.SYMMETRIC,
    NatType.FIREWALL: NatBehaviour.NONE,
}


def factory_for(host: Host) -> Any:
    return lambda family, kind: socket_in_netns(host.netns, family, kind)


def lab_agent(pki: Pki, name: str, host: Host, udp_port: int, tcp_port: int) -> Agent:
    return make_agent(
        pki,
        name,
        bind="0.0.0.0",
        udp_port=udp_port,
        tcp_port=tcp_port,
        sock_factory=factory_for(host),
        local_nat=NAT_BEHAVIOUR[host.nat],
    )


class _ReflectUdp(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if data == b"reflect?":
            self.transport.sendto(f"reflected {addr[0]}:{addr[1]}".encode(), addr)  # type: ignore[attr-defined]


async def _reflect_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername")
    writer.write(f"{peer[0]}:{peer[1]}\n".encode())
    with contextlib.suppress(OSError):
        await writer.drain()
    writer.close()


class Reflector:
    """UDP + TCP reflector on a public lab host."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._udp: asyncio.BaseTransport | None = None
        self._tcp: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        us = socket_in_netns(self.host.netns, socket.AF_INET, socket.SOCK_DGRAM)
        us.bind(("0.0.0.0", REFLECT_UDP))
        self._udp, _ = await loop.create_datagram_endpoint(_ReflectUdp, sock=us)
        ts = socket_in_netns(self.host.netns, socket.AF_INET, socket.SOCK_STREAM)
        ts.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ts.bind(("0.0.0.0", REFLECT_TCP))
        ts.listen(64)
        self._tcp = await asyncio.start_server(_reflect_tcp, sock=ts)

    def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()


async def reflect_udp(
    agent: Agent, reflector: Host, timeout: float = 3.0
) -> tuple[str, int] | None:
    """The agent's public UDP mapping, learnt through its own (running) data socket."""
    dst = (str(reflector.ip), REFLECT_UDP)

    def got() -> tuple[str, int] | None:
        for data, src in agent.unhandled:
            if src == dst and data.startswith(b"reflected "):
                host, port = data[len(b"reflected ") :].decode().rsplit(":", 1)
                return host, int(port)
        return None

    for _ in range(3):
        agent.cm.sendto(b"reflect?", dst)
        with suppress(AssertionError):  # no answer yet: ask again
            await wait_for_async(lambda: got() is not None, timeout / 3, what="reflected")
        if got() is not None:
            return got()
    return None


async def reflect_tcp(host: Host, tcp_port: int, reflector: Host) -> tuple[str, int] | None:
    """The public TCP mapping of `host`'s TCP data port (a connection from that very port)."""
    loop = asyncio.get_running_loop()
    sock = socket_in_netns(host.netns, socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("0.0.0.0", tcp_port))
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, (str(reflector.ip), REFLECT_TCP)), 3)
        data = await asyncio.wait_for(loop.sock_recv(sock, 100), 3)
        h, p = data.decode().strip().rsplit(":", 1)
        return h, int(p)
    except (OSError, TimeoutError, ValueError):
        return None
    finally:
        sock.close()


def candidates_for(
    host: Host,
    agent: Agent,
    udp_public: tuple[str, int] | None,
    tcp_public: tuple[str, int] | None = None,
    *,
    tcp: bool = False,
) -> list[Candidate]:
    """What discovery would report: private address(es), then the reflected mappings."""
    nat = NAT_BEHAVIOUR[host.nat]
    out: list[Candidate] = []
    priv_udp = PathAddr(Transport.UDP, str(host.ip), agent.udp_port)
    if udp_public is None or udp_public != (priv_udp.host, priv_udp.port):
        out.append(Candidate(priv_udp, CandidateKind.PRIVATE, nat))
    if udp_public is not None:
        out.append(Candidate(PathAddr(Transport.UDP, *udp_public), CandidateKind.PUBLIC, nat))
    if tcp:
        priv_tcp = PathAddr(Transport.TCP, str(host.ip), agent.tcp_port)
        if tcp_public is None or tcp_public != (priv_tcp.host, priv_tcp.port):
            out.append(Candidate(priv_tcp, CandidateKind.PRIVATE, nat))
        if tcp_public is not None:
            out.append(Candidate(PathAddr(Transport.TCP, *tcp_public), CandidateKind.PUBLIC, nat))
    return out
