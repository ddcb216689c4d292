"""The agent's DNS server: a thin asyncio shell around enclave.agent.dns_resolver.

    Agent --introduce(intro) / withdraw(peer)--> AgentDns --set / remove--> NameTable
                                                    |
          UDP :53 on the overlay IP (and IPv6) -----+---- TCP :53 (2-byte length framing)
                     respond(table, query) per datagram / per framed message
                                                    |
                               ResolvedRoute: `~enclave` -> overlay IP (systemd-resolved)

The server binds to the overlay IP and, when the system has one, its overlay IPv6
(enclave.cert.overlay6) only (they exist once the TAP has its addresses). Linux still
takes a packet for that address on any interface, so a LAN neighbour routing the overlay range
here reaches the sockets: a query from a source outside the overlay (`sources`) gets no answer
(UDP: nothing; TCP: the kernel's SYN-ACK, then an abort before anything is read).
TCP: at most MAX_TCP_CONNECTIONS at a time (more are closed at once), each closed after
TCP_IDLE_TIMEOUT seconds without a complete query or when a message is malformed beyond a
FORMERR; a reply the client does not read within the timeout ends it too.
A peer's introduction adds `NAME.enclave` only when its certificate verifies and names it; what a
query may see depends on its source address (dns_resolver: a peer sees the owner and itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from typing import cast

from enclave.agent.dns_resolved import ResolvedRoute
from enclave.agent.dns_resolver import NameTable, respond
from enclave.cert.errors import CertificateError
from enclave.cert.identity import SystemIdentity
from enclave.discovery.introduction import Introduction

log = logging.getLogger("enclave.agent.dns")

DNS_PORT = 53
MAX_TCP_CONNECTIONS = 32
TCP_IDLE_TIMEOUT = 10.0
LENGTH_PREFIX = 2

VerifyCert = Callable[[bytes], SystemIdentity]  # raises CertificateError / ValueError
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Sources = Network | tuple[Network, ...]  # the overlay's IPv4 range, or it and its IPv6 /64


def _admitted(sources: Sources | None, asker: str) -> bool:
    """Whether a query from `asker` gets an answer: any source without `sources`, else only one
    inside it (Linux takes a packet for the overlay IP on any interface, so a LAN neighbour
    that routes the overlay range to this host reaches the listener from outside the overlay)."""
    if sources is None:
        return True
    try:
        addr = ipaddress.ip_address(asker)
    except ValueError:
        return False
    nets = sources if isinstance(sources, tuple) else (sources,)
    return any(addr.version == net.version and addr in net for net in nets)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, table: NameTable, sources: Sources | None = None) -> None:
        self.table = table
        self.sources = sources
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not _admitted(self.sources, str(addr[0])):
            return  # silence for a source outside the overlay
        reply = respond(self.table, data, str(addr[0]))
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("dns: udp error: %s", exc)


class DnsServer:
    """UDP and TCP DNS on one address (and `host6`, when given) and port, answering from
    `table`."""

    def __init__(self, table: NameTable, host: str, port: int = DNS_PORT, *,
                 max_tcp: int = MAX_TCP_CONNECTIONS,
                 idle_timeout: float = TCP_IDLE_TIMEOUT,
                 sources: Sources | None = None,
                 host6: str | None = None) -> None:
        self.table = table
        self.sources = sources  # None: answer any source; else only sources inside it
        self.host = host
        self.host6 = host6
        self.port = port
        self.max_tcp = max_tcp
        self.idle_timeout = idle_timeout
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: asyncio.Server | None = None
        self._tcp6: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind both sockets on `host` (OSError if either cannot be bound; nothing stays open
        then), then both on `host6` (when that fails, logged: the server answers on `host`)."""
        loop = asyncio.get_running_loop()
        self._tcp = await asyncio.start_server(self._client, self.host, self.port,
                                               reuse_address=True)
        if self.port == 0:  # tests: the kernel's port for TCP, the same one for the others
            self.port = self._tcp.sockets[0].getsockname()[1]
        try:
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _Udp(self.table, self.sources), local_addr=(self.host, self.port))
            self._udp.append(udp)
        except OSError:
            await self.close()
            raise
        if self.host6 is not None:
            try:
                self._tcp6 = await asyncio.start_server(self._client, self.host6, self.port,
                                                        reuse_address=True)
                udp, _ = await loop.create_datagram_endpoint(
                    lambda: _Udp(self.table, self.sources), local_addr=(self.host6, self.port))
                self._udp.append(udp)
            except OSError as exc:
                log.warning("dns: not on %s port %d: %s", self.host6, self.port, exc)
                if self._tcp6 is not None:
                    self._tcp6.close()
                    self._tcp6 = None

    async def close(self) -> None:
        for udp in self._udp:
            udp.close()
        self._udp = []
        if self._tcp6 is not None:
            self._tcp6.close()
            self._tcp6 = None
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
        for task in list(self._clients):
            task.cancel()
        for task in list(self._clients):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @property
    def tcp_connections(self) -> int:
        return len(self._clients)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._clients) >= self.max_tcp:
            writer.close()
            return
        self._clients.add(task)
        peer = writer.get_extra_info("peername")
        asker = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not _admitted(self.sources, asker):
            self._clients.discard(task)
            writer.transport.abort()  # no answer; the kernel already sent its SYN-ACK
            return
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(LENGTH_PREFIX), self.idle_timeout)
                size = int.from_bytes(head, "big")
                if size == 0:
                    break
                query = await asyncio.wait_for(reader.readexactly(size), self.idle_timeout)
                reply = respond(self.table, query, asker)
                if reply is None:
                    break
                writer.write(len(reply).to_bytes(LENGTH_PREFIX, "big") + reply)
                await asyncio.wait_for(writer.drain(), self.idle_timeout)
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, OSError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class AgentDns:
    """`NAME.enclave` for this system and its introduced peers, served on the overlay IP (and
    the overlay IPv6 `address6`, when given: AAAA answers carry the peers' ones too)."""

    def __init__(self, name: str, address: ipaddress.IPv4Address, interface: str,
                 verify: VerifyCert, *, port: int = DNS_PORT,
                 route: ResolvedRoute | None = None,
                 overlay: Sources | None = None,
                 address6: ipaddress.IPv6Address | None = None) -> None:
        self.name = name
        self.address = address
        self.address6 = address6
        self.table = NameTable(owner=name)
        self.table.set(name, address, address6)
        self._verify = verify
        self.server = DnsServer(self.table, str(address), port, sources=overlay,
                                host6=None if address6 is None else str(address6))
        self.route = route if route is not None else ResolvedRoute(interface, address)
        self.serving = False

    async def start(self) -> bool:
        """Serve DNS and route `~enclave` to it; False (logged) when the port cannot be bound."""
        try:
            await self.server.start()
        except OSError as exc:
            log.warning("dns: cannot serve on %s port %d: %s", self.address, self.server.port,
                        exc)
            return False
        self.serving = True
        log.info("dns: answering NAME.enclave on %s port %d (udp, tcp)", self.address,
                 self.server.port)
        await asyncio.to_thread(self.route.apply)
        return True

    async def stop(self) -> None:
        if self.route.applied:
            await asyncio.to_thread(self.route.revert)
        await self.server.close()
        self.serving = False

    def introduce(self, intro: Introduction) -> None:
        try:
            ident = self._verify(intro.cert_der)
        except (CertificateError, ValueError) as exc:
            log.info("dns: no name for %s: %s", intro.peer, exc)
            return
        if ident.name != intro.peer:
            log.warning("dns: introduction for %s carries %s's certificate", intro.peer,
                        ident.name)
            return
        self.table.set(ident.name, ident.overlay_ip, ident.overlay_ip6)

    def withdraw(self, peer: str) -> None:
        if peer.lower() != self.name.lower():
            self.table.remove(peer)
