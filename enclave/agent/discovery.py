"""The agent's discovery: own private addresses, public mappings by reflection, NAT behaviour.

    data UDP socket :P ---REFLECT_REQUEST---> platform udp A ---> mapping_a
                       ---REFLECT_REQUEST---> platform udp B ---> mapping_b
    TCP socket bound :P (SO_REUSEADDR + SO_REUSEPORT, same port as the data listener)
                       ---connect, REFLECT_REQUEST---> platform tcp B ---> mapping_tcp

    mapping_a != mapping_b                       -> address-and-port-dependent ("symmetric")
    mapping_a == own address and port             -> none (no NAT)
    otherwise                                     -> endpoint-independent

Requests go out from the data sockets themselves, so the reflected mapping is the one peers will
use.

Dual stack: the reflector at the platform address the control connection reached answers for
that family. When one of the platform's URLs (platform_urls: literals, or names resolved off the
event loop) has an address of the other family, the same two UDP requests go there too: that
family's mapping ("udp_alt") becomes a PUBLIC candidate of its own, with its own NAT class (an
IPv4 NAT and a NAT66 or IPv6 firewall in front of one host differ). The host's own global IPv6
addresses are PUBLIC candidates already (candidates.interface_kind), for UDP and for the TCP
data port (a dual-stack listener, agent/transport_tcp.py).

Re-checked every RECHECK seconds (RECHECK_NO_UDP while no UDP mapping comes back: a network
that drops UDP may stop doing so) and whenever the interface addresses change (looked at every
IFACE_CHECK seconds). Replies arrive on the data socket and come in through ``feed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from enclave.cert.keys import Ed25519PrivateKey, sign
from enclave.discovery.candidates import (
    Candidate,
    CandidateKind,
    NatBehaviour,
    PathAddr,
    Transport,
    interface_kind,
)
from enclave.discovery.dualstack import family_of, hostport
from enclave.proto import wire

log = logging.getLogger("enclave.agent.discovery")
logging.getLogger("pyroute2").setLevel(logging.WARNING)  # it logs every netlink message
OVERLAY = ipaddress.ip_network("100.64.0.0/10")
REFLECT_TIMEOUT = 0.5
REFLECT_TRIES = 4
RECHECK = 60.0
RECHECK_NO_UDP = 10.0  # sooner while no UDP reflection comes back (UDP blocked, maybe lifted)
IFACE_CHECK = 2.0
# address flags (linux/if_addr.h) of addresses no peer should be sent to: still being checked
# for duplicates, found duplicate, or deprecated (preferred lifetime over: kept only for old
# connections, RFC 4862)
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40
_UNUSABLE = IFA_F_DADFAILED | IFA_F_DEPRECATED | IFA_F_TENTATIVE
RESOLVE_TIMEOUT = 2.0  # resolving a platform URL's name for the other family's reflection

Mapping = tuple[str, int]


def private_addresses(exclude_ifaces: tuple[str, ...] = ()) -> list[str]:
    """Non-loopback, non-link-local, non-overlay interface addresses (IPv4 and IPv6), without
    tentative, duplicate or deprecated IPv6 ones."""
    from pyroute2 import IPRoute

    for noisy in ("pyroute2", "pyroute2.netlink.core"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    out: list[str] = []
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for msg in ipr.get_addr():
            if names.get(msg["index"]) in exclude_ifaces:
                continue
            text = msg.get_attr("IFA_ADDRESS")
            if not text:
                continue
            if (msg.get_attr("IFA_FLAGS") or msg["flags"]) & _UNUSABLE:
                continue
            addr = ipaddress.ip_address(text)
            if addr.is_loopback or addr.is_link_local or addr.is_multicast or addr in OVERLAY:
                continue
            out.append(str(addr))
    return sorted(set(out))


def reflect_request(name: str, key: Ed25519PrivateKey,
                    msg_type: int = wire.MSG_REFLECT_REQUEST) -> tuple[bytes, bytes]:
    """(nonce, signed request) asking the platform's reflector for our mapping; `msg_type`
    says where the reply comes from (wire.REFLECT_REQUEST_TYPES)."""
    nonce = secrets.token_bytes(wire.REFLECT_NONCE_SIZE)
    part = wire.reflect_signed_part(int(time.time()), nonce, name, msg_type)
    return nonce, part + sign(key, wire.REFLECT_DOMAIN + part)


def classify(a: Mapping | None, b: Mapping | None, local: list[str], port: int) -> NatBehaviour:
    if a is None or b is None:
        return NatBehaviour.UNKNOWN
    if a != b:
        return NatBehaviour.SYMMETRIC
    if a[0] in local and a[1] == port:
        return NatBehaviour.NONE
    return NatBehaviour.ENDPOINT_INDEPENDENT


@dataclass
class DiscoveryState:
    private: list[str] = field(default_factory=list)
    udp: list[Mapping | None] = field(default_factory=list)
    tcp: Mapping | None = None
    nat: NatBehaviour = NatBehaviour.UNKNOWN
    checked_at: float | None = None
    udp_alt: list[Mapping | None] = field(default_factory=list)  # the other family's mappings
    nat_alt: NatBehaviour = NatBehaviour.UNKNOWN

    def candidates(self, udp_port: int, tcp_port: int) -> list[Candidate]:
        out: list[Candidate] = []
        for host in self.private:
            kind = interface_kind(host)
            nat = NatBehaviour.NONE if kind is CandidateKind.PUBLIC else self.nat
            out.append(Candidate(PathAddr(Transport.UDP, host, udp_port), kind, nat))
            out.append(Candidate(PathAddr(Transport.TCP, host, tcp_port), kind, nat))
        for mappings, nat in ((self.udp, self.nat), (self.udp_alt, self.nat_alt)):
            first = mappings[0] if mappings else None
            if first is not None and first[0] not in self.private:
                out.append(Candidate(PathAddr(Transport.UDP, *first), CandidateKind.PUBLIC, nat))
        if self.tcp is not None and self.tcp[0] not in self.private:
            out.append(Candidate(PathAddr(Transport.TCP, *self.tcp), CandidateKind.PUBLIC,
                                 self.nat))
        return out

    @property
    def udp_blocked(self) -> bool:
        """A check ran and no UDP reflection came back, of either family: the site drops UDP
        (peers over the relay over TLS or TCP; re-checked every RECHECK_NO_UDP seconds)."""
        return (self.checked_at is not None and bool(self.udp)
                and not any(m is not None for m in (*self.udp, *self.udp_alt)))

    def mappings_json(self) -> dict[str, Any]:
        def fmt(m: Mapping | None) -> str | None:
            return None if m is None else hostport(*m)

        return {"udp": [fmt(m) for m in self.udp], "tcp": fmt(self.tcp),
                "udp_alt": [fmt(m) for m in self.udp_alt]}


class Discovery:
    def __init__(
        self,
        name: str,
        key: Ed25519PrivateKey,
        send_udp: Callable[[bytes, tuple[str, int]], None],
        *,
        udp_port: int,
        tcp_port: int,
        on_change: Callable[[DiscoveryState], None],
        exclude_ifaces: tuple[str, ...] = (),
        platform_urls: Callable[[], Sequence[str]] = tuple,
    ) -> None:
        self.name = name
        self.key = key
        self.send_udp = send_udp
        self.udp_port = udp_port
        self.tcp_port = tcp_port
        self.on_change = on_change
        self.exclude_ifaces = exclude_ifaces
        self.platform_urls = platform_urls
        self.state = DiscoveryState()
        self._waiting: dict[bytes, asyncio.Future[Mapping]] = {}
        self._kick = asyncio.Event()

    # -- requests ----------------------------------------------------------------------------

    def _request(self) -> tuple[bytes, bytes]:
        return reflect_request(self.name, self.key)

    def feed(self, data: bytes, addr: tuple[Any, ...]) -> bool:
        """A datagram from the data socket; True if it was a reflect reply we waited for."""
        try:
            nonce, host, port = wire.decode_reflect_reply(data)
        except wire.WireError:
            return False
        fut = self._waiting.get(nonce)
        if fut is None or fut.done():
            return False
        fut.set_result((host, port))
        return True

    async def reflect_udp(self, host: str, port: int) -> Mapping | None:
        loop = asyncio.get_running_loop()
        for _ in range(REFLECT_TRIES):
            nonce, req = self._request()
            fut: asyncio.Future[Mapping] = loop.create_future()
            self._waiting[nonce] = fut
            try:
                self.send_udp(req, (host, port))
                return await asyncio.wait_for(fut, REFLECT_TIMEOUT)
            except (TimeoutError, OSError):
                continue
            finally:
                self._waiting.pop(nonce, None)
        return None

    async def reflect_tcp(self, host: str, port: int) -> Mapping | None:
        nonce, req = self._request()
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                             socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("::" if ":" in host else "0.0.0.0", self.tcp_port))
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(loop.sock_connect(sock, (host, port)), 2.0)
            await asyncio.wait_for(loop.sock_sendall(sock, req), 2.0)
            data = b""
            while len(data) < wire.REFLECT_REPLY_SIZE:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 64), 2.0)
                if not chunk:
                    break
                data += chunk
            got_nonce, mhost, mport = wire.decode_reflect_reply(data[: wire.REFLECT_REPLY_SIZE])
            if got_nonce != nonce:
                return None
            # wait for the platform to close first, so TIME_WAIT stays on its side
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(loop.sock_recv(sock, 1), 1.0)
            return (mhost, mport)
        except (OSError, TimeoutError, wire.WireError) as exc:
            log.debug("tcp reflection via %s:%d failed: %s", host, port, exc)
            return None
        finally:
            sock.close()

    # -- the loop ----------------------------------------------------------------------------

    def kick(self) -> None:
        """Re-check now (e.g. after reconnecting to the platform)."""
        self._kick.set()

    async def other_family_host(self, host: str) -> str | None:
        """An address of the platform (from its URLs) whose family differs from `host`'s."""
        try:
            have = family_of(host)
        except ValueError:
            return None
        loop = asyncio.get_running_loop()
        for url in self.platform_urls():
            try:
                name = urlsplit(url).hostname
            except ValueError:
                continue
            if not name:
                continue
            try:
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(name, None, type=socket.SOCK_DGRAM), RESOLVE_TIMEOUT)
            except (OSError, UnicodeError, TimeoutError):
                continue
            for info in infos:
                addr = str(info[4][0])
                if "%" not in addr and family_of(addr) != have:
                    return addr
        return None

    async def check(self, host: str, udp_ports: list[int], tcp_port: int | None) -> None:
        private = await asyncio.to_thread(private_addresses, self.exclude_ifaces)
        alt_host = await self.other_family_host(host)
        hosts = [host] if alt_host is None else [host, alt_host]
        got = list(await asyncio.gather(*(self.reflect_udp(h, p) for h in hosts
                                          for p in udp_ports)))
        udp, udp_alt = got[:len(udp_ports)], got[len(udp_ports):]
        tcp = await self.reflect_tcp(host, tcp_port) if tcp_port else None
        nat = classify(udp[0] if udp else None, udp[1] if len(udp) > 1 else None, private,
                       self.udp_port)
        nat_alt = classify(udp_alt[0] if udp_alt else None,
                           udp_alt[1] if len(udp_alt) > 1 else None, private, self.udp_port)
        new = DiscoveryState(private, udp, tcp, nat, time.time(), udp_alt, nat_alt)
        changed = (new.private, new.udp, new.tcp, new.nat, new.udp_alt, new.nat_alt) != (
            self.state.private, self.state.udp, self.state.tcp, self.state.nat,
            self.state.udp_alt, self.state.nat_alt)
        self.state = new
        log.info("discovery: private %s, udp %s, tcp %s, nat %s; other family via %s: udp %s, "
                 "nat %s", private, udp, tcp, nat.value, alt_host, udp_alt, nat_alt.value)
        if changed:
            self.on_change(new)

    async def run(self, target: Callable[[], tuple[str, list[int], int | None] | None]) -> None:
        """Re-check periodically, on kick() and when interface addresses change."""
        last_check = -RECHECK
        while True:
            dest = target()
            now = time.monotonic()
            try:
                addrs = await asyncio.to_thread(private_addresses, self.exclude_ifaces)
            except OSError:
                addrs = self.state.private
            recheck = RECHECK if any(m is not None for m in self.state.udp) else RECHECK_NO_UDP
            if dest is not None and (self._kick.is_set() or now - last_check >= recheck
                                     or addrs != self.state.private):
                self._kick.clear()
                last_check = now
                try:
                    await self.check(*dest)
                except Exception:
                    log.exception("discovery check failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), IFACE_CHECK)
