"""The platform's discovery reflector: tells an agent the address its packets arrive from.

    agent data socket (UDP :51820) --REFLECT_REQUEST--> platform UDP port A  (= API port)
                                   --REFLECT_REQUEST--> platform UDP port B  (= API port + 1)
    agent TCP data port (reuseport) --connect, REFLECT_REQUEST--> platform TCP port B
                                   <--REFLECT_REPLY (observed ip:port), server closes first

Two UDP ports let the agent see whether its NAT maps per destination (symmetric). Layouts are in
enclave.proto.wire.

Filtering (`enclave netcheck`): a request of type REFLECT_REQUEST_ALT_PORT is answered from the
other UDP port, one of type REFLECT_REQUEST_ALT_ADDR from a send-only UDP socket on a second
address of the platform host, ENCLAVE_DISCOVERY_ALT_ADDRESS (if set; replies carry
REFLECT_FLAG_ALT_ADDR then, so the agent can tell "filtered" from "not offered"). Whether that
reply gets through the agent's NAT is its filtering behaviour (RFC 4787 section 5).

    agent --ALT_PORT request--> udp A     agent <--reply-- udp B        (same address)
    agent --ALT_ADDR request--> udp A     agent <--reply-- ALT_ADDRESS:ephemeral
 A request is answered only when it is signed by the key of an active system,
carries a timestamp within REFLECT_MAX_SKEW and an unseen nonce, and its sender is under the
per-system rate limit; the 40-byte reply is smaller than the 108-byte request (no amplifier).
Anything else is dropped silently.

Order of checks: the signature is verified before a per-system token is spent (forged requests
naming a system cannot use up its budget); the verification work itself is capped by one global
bucket (VERIFY_RATE). Per-system buckets live in an LRU of at most MAX_TRACKED names.

The TCP side is bounded (enclave.platform.frontdoor): at most TCP_MAX_CONNECTIONS open at once,
TCP_MAX_PER_ADDRESS of them from one source address (more are closed at accept), each given
TCP_READ_TIMEOUT for its request.

IPv6: the reflector listens where the API does; bound to ``::`` its sockets are dual-stack
(IPV6_V6ONLY off), so one service reflects over both families. An IPv4 client, which such a
socket reports as ::ffff:a.b.c.d, is told its address as IPv4 (enclave.discovery.dualstack):
the mapping an agent gets is the one its IPv4 peers will see. An IPv6 client is told its IPv6
address -- its global address, or its NAT66 router's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from enclave.cert.keys import verify
from enclave.discovery.dualstack import unmapped_addr
from enclave.platform.frontdoor import ConnectionLimits, guarded_listener
from enclave.proto import wire
from enclave.proto.ratelimit import TokenBucket

log = logging.getLogger("enclave.platform.discovery")
REFLECT_MAX_SKEW = 300
NONCE_CACHE = 65536
RATE_PER_SYSTEM = 20.0  # requests per second, burst the same
VERIFY_RATE = 2000.0  # signature checks per second in all, burst the same
MAX_TRACKED = 65536  # per-system buckets kept (least recently used dropped first)
TCP_READ_TIMEOUT = 5.0
TCP_MAX_CONNECTIONS = 256  # open TCP reflector connections at once (each lasts a few seconds)
TCP_MAX_PER_ADDRESS = 8  # of those, from one source address
PORTS_ENV = "ENCLAVE_DISCOVERY_PORTS"  # "UDP_A,UDP_B" (TCP on UDP_B); default API port, +1
ALT_ADDRESS_ENV = "ENCLAVE_DISCOVERY_ALT_ADDRESS"  # a second local address for filtering tests

KeyLookup = Callable[[str], bytes | None]  # active system's raw public key, or None


def discovery_ports(api_port: int) -> tuple[int, int]:
    raw = os.environ.get(PORTS_ENV)
    if raw:
        a, _, b = raw.partition(",")
        return int(a), int(b)
    return api_port, api_port + 1


def discovery_alt_address() -> str | None:
    """ENCLAVE_DISCOVERY_ALT_ADDRESS, or None when unset."""
    return os.environ.get(ALT_ADDRESS_ENV, "").strip() or None


class Via(enum.IntEnum):
    """Which socket a reply leaves from."""

    SAME = 0  # the one the request arrived on
    OTHER_PORT = 1  # the other UDP port
    OTHER_ADDRESS = 2  # the send-only socket on the alternate address


_VIA = {
    wire.MSG_REFLECT_REQUEST: Via.SAME,
    wire.MSG_REFLECT_REQUEST_ALT_PORT: Via.OTHER_PORT,
    wire.MSG_REFLECT_REQUEST_ALT_ADDR: Via.OTHER_ADDRESS,
}


@dataclass
class Reflector:
    """The sans-socket core: request bytes + source address in, reply bytes (or None) out.

    `answer()` also says which socket the reply must leave from (Via); `handle()` answers only
    plain requests (the TCP reflector, where there is no other socket to reply from)."""

    lookup: KeyLookup
    clock: Callable[[], float] = time.time
    _nonces: collections.OrderedDict[bytes, None] = field(default_factory=collections.OrderedDict)
    _buckets: collections.OrderedDict[str, TokenBucket] = field(
        default_factory=collections.OrderedDict)
    _verify: TokenBucket = field(default_factory=lambda: TokenBucket(VERIFY_RATE, VERIFY_RATE))
    answered: int = 0
    dropped: int = 0
    alt_address: bool = False  # an OTHER_ADDRESS socket exists (REFLECT_FLAG_ALT_ADDR in replies)

    def handle(self, data: bytes, host: str, port: int) -> bytes | None:
        got = self.answer(data, host, port, plain_only=True)
        return None if got is None else got[0]

    def answer(self, data: bytes, host: str, port: int, *,
               plain_only: bool = False) -> tuple[bytes, Via] | None:
        got = self._handle(data, host, port, plain_only)
        if got is None:
            self.dropped += 1
        else:
            self.answered += 1
        return got

    def _handle(self, data: bytes, host: str, port: int,
                plain_only: bool) -> tuple[bytes, Via] | None:
        try:
            req = wire.decode_reflect_request(data)
        except wire.WireError:
            return None
        via = _VIA[req.msg_type]
        if via is not Via.SAME and plain_only:
            return None
        if via is Via.OTHER_ADDRESS and not self.alt_address:
            return None
        now = self.clock()
        if abs(now - req.timestamp) > REFLECT_MAX_SKEW or req.nonce in self._nonces:
            return None
        if not self._verify.allow(now):
            return None
        key = self.lookup(req.name)
        if key is None or not verify(key, req.signature, wire.REFLECT_DOMAIN + data[:44]):
            return None
        if not self._allow(req.name, now):
            return None
        self._nonces[req.nonce] = None
        while len(self._nonces) > NONCE_CACHE:
            self._nonces.popitem(last=False)
        flags = wire.REFLECT_FLAG_ALT_ADDR if self.alt_address else 0
        try:
            return wire.encode_reflect_reply(req.nonce, host, port, flags), via
        except (ValueError, wire.WireError, OverflowError):
            return None

    def _allow(self, name: str, now: float) -> bool:
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = TokenBucket(RATE_PER_SYSTEM, RATE_PER_SYSTEM)
            while len(self._buckets) > MAX_TRACKED:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(name)
        return bucket.allow(now)

    def tracked(self) -> int:
        """How many systems' rate buckets are kept."""
        return len(self._buckets)


class _UdpReflector(asyncio.DatagramProtocol):
    def __init__(self, service: DiscoveryService, index: int) -> None:
        self.service = service
        self.index = index  # which of the service's ports this is

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        host, port = unmapped_addr(addr)
        got = self.service.core.answer(data, host, port)
        if got is not None:
            self.service.send(got[0], got[1], self.index, addr)


class _SendOnly(asyncio.DatagramProtocol):
    """The alternate address's socket: it only sends; whatever arrives is ignored."""


class DiscoveryService:
    """UDP reflectors on two ports, a TCP reflector on the second, and (with an alternate
    address) a send-only UDP socket there."""

    def __init__(self, core: Reflector, host: str, ports: tuple[int, int],
                 alt_address: str | None = None) -> None:
        self.core = core
        self.host = host
        self.ports = ports
        self.alt_address = alt_address if alt_address is not None else discovery_alt_address()
        self._udp: list[asyncio.DatagramTransport] = []
        self._alt: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self.tcp_limits = ConnectionLimits(TCP_MAX_CONNECTIONS, TCP_MAX_CONNECTIONS,
                                           TCP_MAX_PER_ADDRESS)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for i, port in enumerate(self.ports):
            transport, _ = await loop.create_datagram_endpoint(
                functools.partial(_UdpReflector, self, i),
                local_addr=(self.host, port), reuse_port=False,
            )
            self._udp.append(transport)
        if self.alt_address:
            try:
                self._alt, _ = await loop.create_datagram_endpoint(
                    _SendOnly, local_addr=(self.alt_address, 0))
                self.core.alt_address = True
            except OSError as exc:
                log.warning("discovery: no replies from the alternate address %s: %s",
                            self.alt_address, exc)
        # bounded: at most TCP_MAX_CONNECTIONS, TCP_MAX_PER_ADDRESS from one source address
        self._tcp = await asyncio.start_server(self._tcp_client, sock=guarded_listener(
            self.host, self.ports[1], self.tcp_limits, "discovery (tcp)", lifetime=None))
        log.info("discovery reflector on udp %d,%d and tcp %d%s", *self.ports, self.ports[1],
                 f" (alternate address {self.alt_address})" if self._alt is not None else "")

    def send(self, reply: bytes, via: Via, arrived_on: int, addr: tuple[Any, ...]) -> None:
        """Send a reply to a request that arrived on port index `arrived_on`, from `via`."""
        if via is Via.OTHER_ADDRESS:
            transport = self._alt
        elif via is Via.OTHER_PORT:
            transport = self._udp[1 - arrived_on] if len(self._udp) == 2 else None
        else:
            transport = self._udp[arrived_on] if arrived_on < len(self._udp) else None
        if transport is not None:
            transport.sendto(reply, addr)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = writer.get_extra_info("peername")
            data = await asyncio.wait_for(
                reader.readexactly(wire.REFLECT_REQUEST_SIZE), TCP_READ_TIMEOUT
            )
            host, port = unmapped_addr(peer)
            reply = self.core.handle(data, host, port)
            if reply is not None:
                writer.write(reply)
                await asyncio.wait_for(writer.drain(), TCP_READ_TIMEOUT)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()  # the server closes first, so TIME_WAIT stays on this side
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def stop(self) -> None:
        for t in self._udp:
            t.close()
        self._udp.clear()
        if self._alt is not None:
            self._alt.close()
            self._alt = None
        self.core.alt_address = False
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tcp.wait_closed(), 2.0)
            self._tcp = None
