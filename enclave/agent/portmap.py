"""Port mapping: the agent asks the site's router to forward its data UDP port from outside.

    agent :P ---PCP MAP (RFC 6887)-------------------------> gateway:5351
             ---NAT-PMP address + map (RFC 6886)-----------> gateway:5351   if PCP got nothing
             ---UPnP-IGD: SSDP M-SEARCH, SOAP AddPortMapping -> gateway   if neither answered
    granted: EXT_IP:EXT_PORT -> this host :P (UDP), for `lifetime` seconds

The mapped address is offered to peers as one more candidate: a PUBLIC UDP candidate whose NAT
behaviour is "none" (the router forwards anything sent to it, so a peer behind even a symmetric
NAT can reach it without punching). It is offered only when its external address is one the
platform's reflector saw this agent at (a router behind a second NAT maps an address nobody
outside reaches). Renewed at half its lifetime (at least every MIN_RENEW_S), retried with
back-off while no router grants one, and deleted (lifetime 0) when the agent stops.

PCP and NAT-PMP go through asyncio datagram sockets connected to the gateway (replies from
anywhere else never arrive; a datagram that is not the answer is ignored: portmap_wire's
decoders); each attempt is bounded by RETRANSMIT_S, and an ICMP port unreachable ends it at
once. UPnP-IGD uses miniupnpc (the MiniUPnP project's client library, whose daemon is the lab's
router) in a worker thread, bounded by UPNP_TIMEOUT_S. The default gateway is read from
/proc/net/route (IPv4).

Anyone on the LAN can answer SSDP, naming any host as the IGD. So, as Tailscale's portmapper
does, only the default gateway's IGD is used: the agent sends its own SSDP search
(enclave.agent.ssdp) and takes only an answer that comes from the gateway's IPv4 address with a
LOCATION plain http:// to it (gateway_url); miniupnpc gets that one root description URL
(selectigd(url): no discovery of its own), so no other device is ever sent a request. The
control URL the description names (the one URL every SOAP request goes to:
GetExternalIPAddress, AddPortMapping, DeletePortMapping) must pass the same check; any other is
one rate-limited log line (logsafe.RejectionLog) and counts as no IGD.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import miniupnpc

from enclave.agent import ssdp
from enclave.discovery import portmap_wire as pw
from enclave.discovery.candidates import (
    Candidate,
    CandidateKind,
    NatBehaviour,
    PathAddr,
    Transport,
)
from enclave.logsafe import RejectionLog, shown

log = logging.getLogger("enclave.agent.portmap")
RETRY_S = 60.0  # first wait after no router granted a mapping; doubles up to RETRY_MAX_S
RETRY_MAX_S = 900.0
UPNP_DISCOVER_MS = 1500  # SSDP wait for the gateway's answer (it may wait ssdp.MX_S first)
UPNP_TIMEOUT_S = 8.0  # discovery, description fetch and the SOAP call together
RELEASE_TIMEOUT_S = 3.0
DESCRIPTION = "enclave"
ROUTE_FILE = "/proc/net/route"
R = TypeVar("R")


class Method(enum.StrEnum):
    PCP = "pcp"
    NATPMP = "nat-pmp"
    UPNP = "upnp"


METHODS = (Method.PCP, Method.NATPMP, Method.UPNP)


@dataclass(frozen=True)
class PortMapping:
    """A mapping a router granted: EXT_IP:EXT_PORT reaches this host's internal UDP port."""

    method: Method
    external_ip: str
    external_port: int
    internal_port: int
    lifetime: int  # seconds, as granted
    granted_at: float  # wall clock

    @property
    def addr(self) -> PathAddr:
        return PathAddr(Transport.UDP, self.external_ip, self.external_port)

    def candidate(self) -> Candidate:
        return Candidate(self.addr, CandidateKind.PUBLIC, NatBehaviour.NONE)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method.value, "external": f"{self.external_ip}:"
                f"{self.external_port}", "internal_port": self.internal_port,
                "lifetime": self.lifetime, "granted_at": self.granted_at,
                "expires_at": self.granted_at + self.lifetime}


def default_gateway(route_file: str = ROUTE_FILE) -> str | None:
    """The IPv4 default route's gateway (the lowest metric), or None."""
    best: tuple[int, str] | None = None
    try:
        with open(route_file) as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 8 or fields[1] != "00000000" or fields[7] != "00000000":
            continue
        try:
            gw = int(fields[2], 16).to_bytes(4, "little")
            metric = int(fields[6])
        except ValueError:
            continue
        if gw != bytes(4) and (best is None or metric < best[0]):
            best = (metric, ".".join(str(b) for b in gw))
    return best[1] if best else None


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=16)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a flood is dropped, not queued
            self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)  # ICMP unreachable: nobody serves the port


async def exchange(gateway: str, build: Callable[[str], bytes],
                   decode: Callable[[bytes], R | None], *, port: int = pw.SERVER_PORT
                   ) -> R | None:
    """Send build(own address) to gateway:port on RETRANSMIT_S; the first reply decode
    accepts, or None (no answer, or the port is unreachable)."""
    loop = asyncio.get_running_loop()
    try:
        transport, proto = await loop.create_datagram_endpoint(
            _Collector, remote_addr=(gateway, port))
    except OSError as exc:
        log.debug("portmap: no socket towards %s: %s", gateway, exc)
        return None
    try:
        request = build(str(transport.get_extra_info("sockname")[0]))
        for wait in pw.RETRANSMIT_S:
            transport.sendto(request)
            deadline = loop.time() + wait
            while (left := deadline - loop.time()) > 0:
                try:
                    data = await asyncio.wait_for(proto.queue.get(), left)
                except TimeoutError:
                    break
                if data is None:
                    return None
                got = decode(data)
                if got is not None:
                    return got
        return None
    finally:
        transport.close()


class UpnpIgd:
    """The default gateway's UPnP-IGD, found by our SSDP search and driven by miniupnpc (see
    the module docstring); every method blocks: call it in a thread."""

    def __init__(self, rejections: RejectionLog) -> None:
        self.upnp = miniupnpc.UPnP()
        self.rejections = rejections
        self.control_url: str | None = None  # as the gateway's description names it

    def add(self, port: int, lifetime: int, gateway: str) -> tuple[str, int] | None:
        """Map UDP `port` (same number outside) to this host; (external IP, port) or None."""
        if self.control_url is None:
            location = ssdp.search(gateway, UPNP_DISCOVER_MS, on_ignored=self._ignored)
            if location is None:
                log.debug("portmap: upnp: no internet gateway device answered from %s", gateway)
                return None
            try:
                self.control_url = str(self.upnp.selectigd(location))
            except Exception as exc:  # miniupnpc: "No UPnP device discovered"
                log.debug("portmap: upnp: %s: %s", shown(location, 80), exc)
                return None
        if not ssdp.gateway_url(self.control_url, gateway):
            self.rejections.note(("upnp", urlsplit(self.control_url).netloc[:64]),
                                 "portmap: upnp: ignoring IGD %s: not the gateway %s",
                                 shown(self.control_url, 80), gateway)
            return None
        try:
            external = str(self.upnp.externalipaddress())
            ok = self.upnp.addportmapping(port, "UDP", self.upnp.lanaddr, port, DESCRIPTION,
                                          "", lifetime)
        except Exception as exc:  # miniupnpc raises a bare Exception for every failure
            log.debug("portmap: upnp: %s", exc)
            return None
        return (external, port) if ok else None

    def _ignored(self, source: str, location: str) -> None:
        self.rejections.note(("upnp", source), "portmap: upnp: ignoring IGD at %s (LOCATION %s):"
                             " not the gateway", source, shown(location, 80))

    def delete(self, port: int, gateway: str) -> bool:
        if self.control_url is None or not ssdp.gateway_url(self.control_url, gateway):
            return False
        try:
            return bool(self.upnp.deleteportmapping(port, "UDP"))
        except Exception as exc:
            log.debug("portmap: upnp delete: %s", exc)
            return False


class PortMapper:
    """Keeps a mapping of the agent's data UDP port on the site's router while the agent runs.

    `on_change()` is called whenever `mapping` changes (granted, moved, lost)."""

    def __init__(self, port: int, on_change: Callable[[], None], *,
                 methods: Sequence[Method] = METHODS,
                 gateway: Callable[[], str | None] = default_gateway,
                 lifetime: int = pw.LIFETIME_S) -> None:
        self.port = port
        self.on_change = on_change
        self.methods = tuple(methods)
        self.gateway = gateway
        self.lifetime = lifetime
        self.mapping: PortMapping | None = None
        self.attempts = 0
        self.last_error: str | None = None
        self._nonce = secrets.token_bytes(pw.PCP_NONCE_SIZE)  # names our PCP mapping
        self._natpmp_ip: str | None = None
        self._igd: UpnpIgd | None = None
        self._rejections = RejectionLog(log)  # UPnP devices that are not the gateway

    # -- what the agent reads --------------------------------------------------------------------

    def candidates(self, reflected: set[str]) -> list[Candidate]:
        """The mapped candidate, when its external address is one the reflector saw."""
        m = self.mapping
        if m is None or m.external_ip not in reflected:
            return []
        return [m.candidate()]

    def describe(self) -> dict[str, Any]:
        return {"mapping": self.mapping.to_json() if self.mapping else None,
                "methods": [m.value for m in self.methods], "attempts": self.attempts,
                "last_error": self.last_error}

    # -- running ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Map, renew before the lifetime ends, retry with back-off; until cancelled."""
        retry = RETRY_S
        while True:
            got = await self.request()
            old, self.mapping = self.mapping, got
            if (None if got is None else got.addr) != (None if old is None else old.addr):
                if got is not None:
                    log.info("portmap: %s:%d -> udp :%d via %s for %d s", got.external_ip,
                             got.external_port, self.port, got.method.value, got.lifetime)
                else:
                    log.info("portmap: no mapping (%s)", self.last_error)
                self.on_change()
            if got is not None:
                retry = RETRY_S
                await asyncio.sleep(pw.renew_after(got.lifetime))
            else:
                await asyncio.sleep(retry)
                retry = min(retry * 2, RETRY_MAX_S)

    async def request(self) -> PortMapping | None:
        """One round: the current mapping's method first, then the others in order."""
        self.attempts += 1
        gateway = self.gateway()
        if gateway is None:
            self.last_error = "no IPv4 default gateway"
            return None
        order = list(self.methods)
        if self.mapping is not None and self.mapping.method in order:
            order.remove(self.mapping.method)
            order.insert(0, self.mapping.method)
        for method in order:
            try:
                got = await self._map(method, gateway, self.lifetime)
            except Exception as exc:  # a bug or an odd router never stops the agent
                log.warning("portmap: %s failed: %r", method.value, exc)
                got = None
            if got is not None:
                self.last_error = None
                return got
        self.last_error = f"no mapping from {gateway} ({', '.join(m.value for m in order)})"
        return None

    async def release(self) -> None:
        """Delete the mapping (lifetime 0), waiting at most RELEASE_TIMEOUT_S."""
        m, self.mapping = self.mapping, None
        if m is None:
            return
        gateway = self.gateway()
        try:
            if gateway is not None:
                await asyncio.wait_for(self._map(m.method, gateway, 0, m), RELEASE_TIMEOUT_S)
                log.info("portmap: released %s:%d", m.external_ip, m.external_port)
        except Exception as exc:  # stopping goes on whatever the router does
            log.info("portmap: release of %s:%d unconfirmed: %r", m.external_ip,
                     m.external_port, exc)

    # -- the three methods -----------------------------------------------------------------------

    async def _map(self, method: Method, gateway: str, lifetime: int,
                   old: PortMapping | None = None) -> PortMapping | None:
        if method is Method.PCP:
            return await self._pcp(gateway, lifetime, old)
        if method is Method.NATPMP:
            return await self._natpmp(gateway, lifetime)
        return await self._upnp(gateway, lifetime, old)

    def _granted(self, method: Method, got: pw.Reply | None, lifetime: int
                 ) -> PortMapping | None:
        if isinstance(got, pw.Refused):
            self.last_error = f"{method.value}: result code {got.result}"
            return None
        if got is None or lifetime == 0:
            return None
        return PortMapping(method, got.external_ip, got.external_port, self.port,
                           got.lifetime, time.time())

    async def _pcp(self, gateway: str, lifetime: int, old: PortMapping | None
                   ) -> PortMapping | None:
        prev = old or self.mapping
        suggest = (prev.external_port, prev.external_ip) if prev else (self.port, "0.0.0.0")

        def build(own: str) -> bytes:
            return pw.encode_pcp_map(self._nonce, own, self.port, lifetime,
                                     external_port=suggest[0], external_ip=suggest[1])

        def decode(data: bytes) -> pw.Reply | None:
            return pw.decode_pcp_map(data, self._nonce, self.port)

        got: pw.Reply | None = await exchange(gateway, build, decode)
        return self._granted(Method.PCP, got, lifetime)

    async def _natpmp(self, gateway: str, lifetime: int) -> PortMapping | None:
        if lifetime:
            addr = await exchange(gateway, lambda _own: pw.encode_natpmp_address(),
                                  pw.decode_natpmp_address)
            if addr is None:
                return None
            result, public, _epoch = addr
            if result != pw.NATPMP_SUCCESS:
                self.last_error = f"nat-pmp: result code {result}"
                return None
            self._natpmp_ip = public
        public_ip = self._natpmp_ip or "0.0.0.0"

        def decode(data: bytes) -> pw.Reply | None:
            return pw.decode_natpmp_map(data, self.port, public_ip)

        got: pw.Reply | None = await exchange(
            gateway, lambda _own: pw.encode_natpmp_map(self.port, lifetime), decode)
        return self._granted(Method.NATPMP, got, lifetime)

    async def _upnp(self, gateway: str, lifetime: int, old: PortMapping | None
                    ) -> PortMapping | None:
        if lifetime == 0:
            igd = self._igd
            if igd is not None and old is not None:
                await _bounded(asyncio.to_thread(igd.delete, old.external_port, gateway))
            return None
        if self._igd is None:
            self._igd = UpnpIgd(self._rejections)
        igd = self._igd
        got = await _bounded(asyncio.to_thread(igd.add, self.port, lifetime, gateway))
        if got is None:
            self._igd = None  # discover afresh next time
            return None
        return PortMapping(Method.UPNP, got[0], got[1], self.port, lifetime, time.time())


async def _bounded(call: Awaitable[R]) -> R | None:
    """`call`'s result, or None after UPNP_TIMEOUT_S (the worker thread finishes on its own,
    bounded by miniupnpc's socket timeouts)."""
    try:
        return await asyncio.wait_for(call, UPNP_TIMEOUT_S)
    except TimeoutError:
        return None
