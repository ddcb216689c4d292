"""The platform's discovery reflector: tells an agent the address its packets arrive from.

    agent data socket (UDP :51820) --REFLECT_REQUEST--> platform UDP port A  (= API port)
                                   --REFLECT_REQUEST--> platform UDP port B  (= API port + 1)
    agent TCP data port (reuseport) --connect, REFLECT_REQUEST--> platform TCP port B
                                   <--REFLECT_REPLY (observed ip:port), server closes first

Two UDP ports let the agent see whether its NAT maps per destination (symmetric). Layouts are in
enclave.proto.wire. A request is answered only when it is signed by the key of an active system,
carries a timestamp within REFLECT_MAX_SKEW and an unseen nonce, and its sender is under the
per-system rate limit; the 40-byte reply is smaller than the 108-byte request (no amplifier).
Anything else is dropped silently.

Order of checks: the signature is verified before a per-system token is spent (forged requests
naming a system cannot use up its budget); the verification work itself is capped by one global
bucket (VERIFY_RATE). Per-system buckets live in an LRU of at most MAX_TRACKED names.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from enclave.cert.keys import verify
from enclave.proto import wire
from enclave.proto.ratelimit import TokenBucket

log = logging.getLogger("enclave.platform.discovery")
REFLECT_MAX_SKEW = 300
NONCE_CACHE = 65536
RATE_PER_SYSTEM = 20.0  # requests per second, burst the same
VERIFY_RATE = 2000.0  # signature checks per second in all, burst the same
MAX_TRACKED = 65536  # per-system buckets kept (least recently used dropped first)
TCP_READ_TIMEOUT = 5.0
PORTS_ENV = "ENCLAVE_DISCOVERY_PORTS"  # "UDP_A,UDP_B" (TCP on UDP_B); default API port, +1

KeyLookup = Callable[[str], bytes | None]  # active system's raw public key, or None


def discovery_ports(api_port: int) -> tuple[int, int]:
    raw = os.environ.get(PORTS_ENV)
    if raw:
        a, _, b = raw.partition(",")
        return int(a), int(b)
    return api_port, api_port + 1


@dataclass
class Reflector:
    """The sans-socket core: request bytes + source address in, reply bytes (or None) out."""

    lookup: KeyLookup
    clock: Callable[[], float] = time.time
    _nonces: collections.OrderedDict[bytes, None] = field(default_factory=collections.OrderedDict)
    _buckets: collections.OrderedDict[str, TokenBucket] = field(
        default_factory=collections.OrderedDict)
    _verify: TokenBucket = field(default_factory=lambda: TokenBucket(VERIFY_RATE, VERIFY_RATE))
    answered: int = 0
    dropped: int = 0

    def handle(self, data: bytes, host: str, port: int) -> bytes | None:
        reply = self._handle(data, host, port)
        if reply is None:
            self.dropped += 1
        else:
            self.answered += 1
        return reply

    def _handle(self, data: bytes, host: str, port: int) -> bytes | None:
        try:
            req = wire.decode_reflect_request(data)
        except wire.WireError:
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
        try:
            return wire.encode_reflect_reply(req.nonce, host, port)
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
    def __init__(self, core: Reflector) -> None:
        self.core = core
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        host, port = str(addr[0]), int(addr[1])
        reply = self.core.handle(data, host, port)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class DiscoveryService:
    """UDP reflectors on two ports and a TCP reflector on the second."""

    def __init__(self, core: Reflector, host: str, ports: tuple[int, int]) -> None:
        self.core = core
        self.host = host
        self.ports = ports
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for port in self.ports:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpReflector(self.core), local_addr=(self.host, port), reuse_port=False
            )
            self._udp.append(transport)
        self._tcp = await asyncio.start_server(
            self._tcp_client, self.host, self.ports[1], reuse_address=True
        )
        log.info("discovery reflector on udp %d,%d and tcp %d", *self.ports, self.ports[1])

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = writer.get_extra_info("peername")
            data = await asyncio.wait_for(
                reader.readexactly(wire.REFLECT_REQUEST_SIZE), TCP_READ_TIMEOUT
            )
            reply = self.core.handle(data, str(peer[0]), int(peer[1]))
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
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tcp.wait_closed(), 2.0)
            self._tcp = None
