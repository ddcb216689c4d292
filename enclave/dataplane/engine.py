"""DataPlane: the object the agent drives — TAP + UDP socket + the compiled per-direction loops.

    ConnectionManager (asyncio)                      enclave._fastpath.DataPlane (native)
    ---------------------------                      ------------------------------------
    apply(PeerKeysUpdated)                       --> keys: slot install (SessionKeys as they
                                                     are, address, certified MAC / overlay
                                                     addresses / routes), atomic
                                                     no keys: slot emptied, MACs forgotten
    peer_counters(peer)                          <-- frames/bytes/drops per peer
    on_punt(cb) / punt_reader()                  <-- punt socket: handshakes, CONTROL, unknown
                                                     indices (DATAGRAM), FIRST_RX, ROAMED,
                                                     RELAYED, TX (a batch of encrypted DATA
                                                     for a TCP or relay-over-TLS path)
    use_relay_routes(route)                      --> how apply() finds the UDP relay's address
                                                     and channel for a relayed peer
    send_raw(data, addr)                         --> same UDP socket (Python-originated packets)
    inject(packet) / inject_frames(frames)       --> DATA that arrived over TCP / the relay
    inject_relayed(peer, frames)                 --> DATA a relay brought for a peer whose
                                                     path is direct: RELAYED for fresh ones
    poll_activity()                              <-- (peer, local index, rx?, tx messages) for
                                                     Node.report_activity
    serve(handler) / aclose()                    --> loops started; punt messages and key usage
                                                     routed to a PuntHandler (the agent's
                                                     ConnectionManager) from the asyncio loop:
        DATAGRAM -> handler.receive_udp    TX (a batch) -> handler.send_on_path
        FIRST_RX -> handler.report_activity (rx)    ROAMED -> handler.peer_roamed
        RELAYED -> handler.peer_relayed
        every ACTIVITY_INTERVAL: poll_activity -> handler.report_activity

    TAP enclave0 --[tx thread: switch, TSO split, seal, sendmmsg/GSO]--> UDP socket
    TAP enclave0 <--[rx thread: recvmmsg/GRO, replay, open, anti-spoof, GRO]-- UDP socket

Paths (PeerKeysUpdated.addr) and what the compiled loops do with them (_fp_relaypath.pxi):
  UDP              sealed and sent by the tx thread; received by the rx thread
  RELAY (UDP)      the same, with the relay header (MSG_RELAY_DATA, our channel) in front, to
                   and from the relay's address, when the route callback (use_relay_routes)
                   knows the channel; else as TCP below, and Python's relay client wraps
  TCP, RELAY_TLS   sealed by the tx thread and punted as one TX batch per flush (the TCP
                   framing); Python writes the batch to the stream / one WebSocket message;
                   what arrives goes back as INJECT batches (inject_frames)

Workers (``threads`` N > 1, `enclave up --threads`): the TAP has N queues (IFF_MULTI_QUEUE,
tap.py) and the data socket N - 1 siblings bound to its address with SO_REUSEPORT
(reuseport_siblings); worker k is a tx and an rx thread on queue k and socket k:

    TAP queue k --[tx k]--> socket k      flows steered to a queue by the tun driver
    TAP queue k <--[rx k]-- socket k      peers spread over the sockets by the kernel's
                                          4-tuple hash: one peer's packets reach one worker

Offloads (each with a start-up self-test and a kill switch, ``offload=False``):
  TAP: IFF_VNET_HDR + TUNSETOFFLOAD(CSUM|TSO4|TSO6) (TapDevice); refused -> plain frames.
  UDP: UDP_SEGMENT (getsockopt probe; EIO/EINVAL at send time -> plain datagrams, counted in
       gso_fallbacks), UDP_GRO (setsockopt; refused -> one datagram per recv slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from enclave import _fastpath as fp
from enclave.dataplane.mtu import DEFAULT_OVERLAY_MTU
from enclave.dataplane.tap import DEFAULT_NAME, TapDevice, in_netns
from enclave.discovery.candidates import PathAddr, Transport
from enclave.proto.events import PeerKeysUpdated

log = logging.getLogger(__name__)

ACTIVITY_INTERVAL = 1.0  # seconds between key-usage reports to the handler (serve)
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
PUNT_RECV_SIZE = max(65536, fp.PUNT_BATCH_MAX) + fp.PUNT_HEADER_LEN  # a datagram or a batch

_PUNT_HDR = struct.Struct("<BBHiI16s")  # kind, family, port (BE, fixed below), slot, index, addr


@dataclass(frozen=True)
class PuntMessage:
    """One message from the native loops (layout: enclave/_fp_punt.pxi)."""

    kind: int  # fp.PUNT_DATAGRAM | PUNT_FIRST_RX | PUNT_ROAMED | PUNT_TX | PUNT_RELAYED
    peer: str | None  # for FIRST_RX / ROAMED / TX / RELAYED
    local_index: int  # TX: how many frames the batch holds
    addr: tuple[str, int] | None
    packet: bytes  # TX: the batch (u16 big-endian length | packet, repeated)


def parse_punt(raw: bytes | memoryview) -> tuple[int, int, int, tuple[str, int] | None, bytes]:
    """(kind, slot, index, addr, packet) of one punt message (packet: a copy); ValueError if
    malformed."""
    if len(raw) < fp.PUNT_HEADER_LEN:
        raise ValueError(f"punt message of {len(raw)} bytes is shorter than its header")
    kind, family, _port, slot, index, addr = _PUNT_HDR.unpack_from(raw)
    port = int.from_bytes(raw[2:4], "big")
    where: tuple[str, int] | None
    if family == 4:
        where = (str(ipaddress.IPv4Address(addr[:4])), port)
    elif family == 6:
        where = (str(ipaddress.IPv6Address(addr)), port)
    elif family == 0:
        where = None
    else:
        raise ValueError(f"punt message with address family {family}")
    return kind, slot, index, where, bytes(raw[fp.PUNT_HEADER_LEN :])


class PuntHandler(Protocol):
    """Where serve() routes what the loops hand to Python (the agent's ConnectionManager)."""

    def receive_udp(self, data: bytes, src: tuple[str, int]) -> None: ...

    def send_on_path(self, peer: str, frames: bytes) -> bool: ...

    def report_activity(self, local_index: int, *, rx: bool, tx_messages: int | None) -> None: ...

    def peer_roamed(self, peer: str, addr: tuple[str, int], local_index: int) -> None: ...

    def peer_relayed(self, peer: str, local_index: int) -> None: ...


SOCKET_BUFFER = 8 << 20  # bytes of UDP send/receive buffer: absorbs bursts of whole batches
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33


def grow_socket_buffers(sock: socket.socket, size: int = SOCKET_BUFFER) -> tuple[int, int]:
    """Raise SO_SNDBUF/SO_RCVBUF (past the sysctl caps when root); returns what took effect."""
    for force, plain in ((SO_SNDBUFFORCE, socket.SO_SNDBUF), (SO_RCVBUFFORCE, socket.SO_RCVBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
            except OSError:
                log.debug("cannot grow socket buffer %d", plain)
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
    )


def udp_gso_supported(sock: socket.socket) -> bool:
    """Self-test: does the kernel know UDP_SEGMENT on this socket?"""
    try:
        sock.getsockopt(SOL_UDP, UDP_SEGMENT)
    except OSError:
        return False
    return True


def aqm_tuning_from_env() -> dict[str, int]:
    """CoDel target / interval overrides in microseconds (ENCLAVE_AQM_TARGET_US,
    ENCLAVE_AQM_INTERVAL_US) for DataPlane.tune; measuring other links is what they are for
    (defaults: fp.AQM_TARGET_NS / AQM_INTERVAL_NS, chosen in docs/PERFORMANCE.md). A value
    that is not a positive integer is a ValueError."""
    out: dict[str, int] = {}
    for key, env in (("aqm_target_us", "ENCLAVE_AQM_TARGET_US"),
                     ("aqm_interval_us", "ENCLAVE_AQM_INTERVAL_US")):
        raw = os.environ.get(env)
        if raw:
            if not raw.isdigit() or int(raw) <= 0:
                raise ValueError(f"{env} must be a positive number of microseconds, got {raw!r}")
            out[key] = int(raw)
    return out


def reuseport_siblings(
    sock: socket.socket, count: int, netns: str | None = None
) -> list[socket.socket]:
    """`count` more UDP sockets bound to `sock`'s address with SO_REUSEPORT (in network
    namespace `netns`, the TAP's): the kernel then spreads received datagrams over the group by
    their 4-tuple hash, so all of one peer's arrive on one socket. `sock` must have been bound
    with SO_REUSEPORT set (ValueError otherwise); the kernel admits only sockets of the same
    user to the group."""
    if count <= 0:
        return []
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
        raise ValueError("the data socket needs SO_REUSEPORT before bind() for several workers")
    where = sock.getsockname()

    def make() -> list[socket.socket]:
        out: list[socket.socket] = []
        try:
            for _ in range(count):
                s = socket.socket(sock.family, socket.SOCK_DGRAM)
                out.append(s)
                if sock.family == socket.AF_INET6:  # dual-stack like the data socket, or not
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, sock.getsockopt(
                        socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                s.bind(where[:2])
        except BaseException:
            for s in out:
                s.close()
            raise
        return out

    return make() if netns is None else in_netns(netns, make)


def enable_udp_gro(sock: socket.socket) -> bool:
    """Turn on UDP_GRO (coalesced receive) on the socket; False if the kernel refuses."""
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


Addr = tuple[str, int]
RelayRoute = Callable[[PathAddr], "tuple[Addr, int] | None"]
"""A relayed path -> (the UDP relay's address, our channel for the peer), or None when the
relay client has no such channel (enclave.agent.relay_client.RelayClient.route)."""


@dataclass(frozen=True)
class PathTarget:
    """Where the compiled loops send a peer's DATA (DataPlane.install's addr / via_python /
    relay_channel)."""

    addr: Addr | None = None  # None: keep the slot's address
    via_python: bool = False  # TCP / relay over TLS: TX batches for Python
    relay_channel: int = 0  # the UDP relay, natively: our channel there (addr: the relay)


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def path_target(addr: object, route: RelayRoute | None = None) -> PathTarget:
    """The PathTarget of a Node address (PathAddr or (host, port)); ValueError otherwise."""
    if addr is None:
        return PathTarget()
    if isinstance(addr, PathAddr):
        if addr.transport is Transport.UDP:
            return PathTarget((addr.host, addr.port))
        if addr.transport is Transport.RELAY and route is not None:
            found = route(addr)
            if found is not None and _ip_literal(found[0][0]):  # the loops take no names
                return PathTarget(found[0], relay_channel=found[1])
        return PathTarget(via_python=True)
    if isinstance(addr, tuple) and len(addr) == 2:
        return PathTarget((str(addr[0]), int(addr[1])))
    raise ValueError(f"unsupported peer address {addr!r}")


class DataPlane:
    """TAP device + UDP socket + native loops, addressed by peer name.

    ``tap`` and ``udp_sock`` stay owned by the caller unless the DataPlane created them
    (``DataPlane.open``). One worker per TAP queue (``tap.fds``): the further workers' sockets
    are made here (reuseport_siblings) and closed with the data plane. ``apply(update)`` is
    the one place a Node's PeerKeysUpdated becomes a compiled install or removal; the native
    rx threads read the UDP sockets.
    """

    def __init__(
        self,
        tap: TapDevice,
        udp_sock: socket.socket,
        *,
        offload: bool = True,
        mtu: int | None = None,
        max_peers: int = 256,
        owns_tap: bool = False,
        udp_offload: bool | None = None,
        aqm: bool = True,
    ) -> None:
        self.tap = tap
        self.udp_sock = udp_sock
        self.mtu = tap.mtu if mtu is None else mtu
        self.threads = len(tap.fds)
        self.worker_socks = reuseport_siblings(udp_sock, self.threads - 1, tap.netns)
        try:
            socks = [udp_sock, *self.worker_socks]
            udp_off = offload if udp_offload is None else udp_offload  # None: follow `offload`
            self.udp_gso = udp_off and udp_gso_supported(udp_sock)
            self.udp_gro = udp_off and all([enable_udp_gro(s) for s in socks])
            self.tap_gro = offload and tap.vnet_hdr and bool(tap.offload)
            for s in socks:
                s.setblocking(False)
            self.socket_buffers = grow_socket_buffers(udp_sock)
            for s in self.worker_socks:
                grow_socket_buffers(s)
            self.native = fp.DataPlane(
                tap.fd,
                udp_sock.fileno(),
                vnet_hdr=tap.vnet_hdr,
                tap_gro=self.tap_gro,
                udp_gso=self.udp_gso,
                udp_gro=self.udp_gro,
                mtu=self.mtu,
                max_peers=max_peers,
                aqm=aqm,
                queues=[(fd, s.fileno())
                        for fd, s in zip(tap.fds[1:], self.worker_socks, strict=True)],
            )
        except BaseException:
            self._close_worker_socks()
            raise
        if aqm:
            self.native.tune(**aqm_tuning_from_env())
        self.aqm = aqm
        self._owns_tap = owns_tap
        self._slots: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self._free = list(range(max_peers - 1, -1, -1))
        self._activity: dict[tuple[int, int], tuple[int, int | None]] = {}
        self._punt_cbs: list[Callable[[PuntMessage], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handler: PuntHandler | None = None
        self._activity_task: asyncio.Task[None] | None = None
        self._relay_route: RelayRoute | None = None
        self.punt_errors = 0
        self._punt_buf = bytearray(PUNT_RECV_SIZE)  # read_punt's receive buffer

    @classmethod
    def open(
        cls,
        udp_sock: socket.socket,
        *,
        name: str = DEFAULT_NAME,
        mac: bytes | str | None = None,
        address: str | ipaddress.IPv4Interface | None = None,
        address6: str | ipaddress.IPv6Interface | None = None,
        mtu: int = DEFAULT_OVERLAY_MTU,
        offload: bool = True,
        netns: str | None = None,
        max_peers: int = 256,
        aqm: bool = True,
        threads: int = 1,
    ) -> DataPlane:
        """Create the TAP (MAC + overlay addresses from the certificate: `address6` is the
        derived overlay IPv6, enclave.cert.overlay6) and the data plane;
        threads > 1: that many workers (a multi-queue TAP; `udp_sock` bound with
        SO_REUSEPORT)."""
        if isinstance(mac, bytes):
            mac = ":".join(f"{b:02x}" for b in mac)
        tap = TapDevice(
            name,
            mac=mac,
            address=None if address is None else str(address),
            address6=None if address6 is None else str(address6),
            mtu=mtu,
            vnet_hdr=offload,
            offload=offload,
            netns=netns,
            queues=threads,
        )
        try:
            return cls(
                tap,
                udp_sock,
                offload=offload,
                mtu=mtu,
                max_peers=max_peers,
                owns_tap=True,
                aqm=aqm,
            )
        except BaseException:
            tap.close()
            raise

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self.native.start()

    def stop(self) -> None:
        self.native.stop()

    def close(self) -> None:
        """Stop the loops, detach the punt reader, close the TAP if we created it."""
        self.native.stop()
        if self._loop is not None:
            try:
                self._loop.remove_reader(self.native.punt_socket.fileno())
            except (RuntimeError, ValueError):
                pass
            self._loop = None
        self.native.close()
        self._close_worker_socks()
        if self._owns_tap:
            self.tap.close()

    def _close_worker_socks(self) -> None:
        socks, self.worker_socks = self.worker_socks, []
        for s in socks:
            s.close()

    def serve(self, handler: PuntHandler) -> None:
        """Start the loops and route punt messages and key usage to `handler` (from the
        running asyncio loop) until aclose()."""
        loop = asyncio.get_running_loop()
        self.native.start()
        self._handler = handler
        self.on_punt(self._route, loop)
        self._activity_task = loop.create_task(self._report_activity())

    async def aclose(self) -> None:
        """Stop routing, then stop and join the loops and close (off the event loop)."""
        task, self._activity_task = self._activity_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._handler = None
        await asyncio.to_thread(self.close)

    def _route(self, msg: PuntMessage) -> None:
        h = self._handler
        if h is None:
            return
        if msg.kind == fp.PUNT_DATAGRAM and msg.addr is not None:
            h.receive_udp(msg.packet, msg.addr)
        elif msg.kind == fp.PUNT_TX and msg.peer is not None:
            h.send_on_path(msg.peer, msg.packet)
        elif msg.kind == fp.PUNT_FIRST_RX:
            h.report_activity(msg.local_index, rx=True, tx_messages=None)
        elif msg.kind == fp.PUNT_ROAMED and msg.peer is not None and msg.addr is not None:
            h.peer_roamed(msg.peer, msg.addr, msg.local_index)
        elif msg.kind == fp.PUNT_RELAYED and msg.peer is not None:
            h.peer_relayed(msg.peer, msg.local_index)

    async def _report_activity(self) -> None:
        while True:
            await asyncio.sleep(ACTIVITY_INTERVAL)
            h = self._handler
            if h is None:
                return
            try:
                for _peer, index, got, sent in self.poll_activity():
                    h.report_activity(index, rx=got, tx_messages=sent)
            except Exception:  # keep reporting; a bug here must not end the data path
                log.exception("data-plane activity report failed")

    def __enter__(self) -> DataPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {
            "tap": self.tap.name,
            "mtu": self.mtu,
            # the overlay IPv6 the TAP holds (None: none given, or IPv6 is off on it)
            "address6": None if self.tap.address6 is None else str(self.tap.address6.ip),
            "vnet_hdr": self.tap.vnet_hdr,
            "tap_offload": self.tap.offload,
            "tap_gro": self.tap_gro,
            "udp_gso": self.udp_gso,
            "udp_gro": self.udp_gro,
            "aqm": self.aqm,
            "threads": self.threads,
        }

    # -- sessions (ConnectionManager adapter) ------------------------------------------------------
    def _slot_for(self, peer: str) -> int:
        slot = self._slots.get(peer)
        if slot is None:
            if not self._free:
                raise RuntimeError(f"no free data-plane slot for {peer!r}")
            slot = self._free.pop()
            self._slots[peer] = slot
            self._names[slot] = peer
        return slot

    def apply(self, update: PeerKeysUpdated) -> None:
        """Make `update.peer`'s slot what the Node published: its keys, address and certified
        identity (replacing whatever it had), or no slot at all when it has no keys."""
        peer = update.peer
        if update.tx is None and not update.rx:
            self.remove_peer(peer)
            return
        ident = update.identity
        if ident is None:
            raise ValueError(f"keys for {peer!r} without a certified identity")
        target = path_target(update.addr, self._relay_route)
        new = peer not in self._slots
        slot = self._slot_for(peer)
        try:
            self.native.install(
                slot,
                update.tx,
                update.rx,
                peer_mac=ident.mac,
                allow_bridging=bool(ident.gateway_routes),
                addr=target.addr,
                overlay_ip4=ident.overlay_ip,
                overlay_ip6=() if ident.overlay_ip6 is None else (ident.overlay_ip6,),
                routes=ident.gateway_routes,
                via_python=target.via_python,
                relay_channel=target.relay_channel,
            )
        except BaseException:
            if new:
                self._release(peer)
            raise

    def _release(self, peer: str) -> None:
        slot = self._slots.pop(peer)
        del self._names[slot]
        self._free.append(slot)
        for key in [k for k in self._activity if k[0] == slot]:
            del self._activity[key]

    def remove_peer(self, peer: str) -> None:
        slot = self._slots.get(peer)
        if slot is None:
            return
        self.native.remove(slot)
        self._release(peer)

    def peer_counters(self, peer: str) -> dict[str, int]:
        slot = self._slots.get(peer)
        if slot is None:
            return {}
        counters: dict[str, int] = self.native.counters(slot)
        return counters

    counters = peer_counters

    def global_counters(self) -> dict[str, Any]:
        counters: dict[str, Any] = self.native.global_counters()
        return counters

    def peer_addr(self, peer: str) -> tuple[str, int] | None:
        slot = self._slots.get(peer)
        return None if slot is None else self.native.get_addr(slot)

    def poll_activity(self) -> list[tuple[str, int, bool, int | None]]:
        """(peer, local_index, received since last poll, tx messages) for Node.report_activity."""
        out = []
        for slot, index, rx_frames, sent in self.native.activity():
            prev = self._activity.get((slot, index))
            if prev == (rx_frames, sent):
                continue
            self._activity[(slot, index)] = (rx_frames, sent)
            got = rx_frames > (prev[0] if prev else 0)
            out.append((self._names[slot], index, got, sent))
        return out

    # -- Python-originated traffic ---------------------------------------------------------------
    def send_raw(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send one packet (handshake, CONTROL, discovery) from the data socket."""
        try:
            self.udp_sock.sendto(data, addr)
        except BlockingIOError:
            log.debug("UDP socket full: dropped a %d-byte control packet", len(data))

    def inject(self, packet: bytes) -> None:
        """DATA received over TCP or the relay: decrypt and deliver it like a UDP datagram."""
        try:
            self.native.inject(packet)
        except OSError:  # punt socket full: the packet is lost like on a busy link
            log.debug("inject queue full: dropped a %d-byte DATA packet", len(packet))

    def inject_frames(self, frames: bytes | memoryview) -> None:
        """Many DATA packets received over TCP or the relay, framed (u16 big-endian length |
        packet, repeated; at most fp.PUNT_BATCH_MAX bytes): one message to the rx thread."""
        try:
            self.native.inject_frames(frames)
        except OSError:  # punt socket full: the packets are lost like on a busy link
            log.debug("inject queue full: dropped a %d-byte DATA batch", len(frames))

    def inject_relayed(self, peer: str, frames: bytes | memoryview) -> None:
        """DATA a relay brought for `peer` while its session's path is direct, framed as for
        inject_frames: delivered the same, and each packet that opens as the newest on the
        peer's current key (authentic, past the replay window) is reported back as RELAYED
        (handler.peer_relayed): the peer itself sends over the relay now.  A replay of relayed
        DATA fails the window and reports nothing."""
        slot = self._slots.get(peer)
        if slot is None or not 2 < len(frames) <= fp.PUNT_BATCH_MAX:
            self.inject_frames(frames)
            return
        hdr = _PUNT_HDR.pack(fp.PUNT_INJECT, 0, 0, slot, fp.INJECT_RELAYED, bytes(16))
        try:
            self.native.punt_socket.sendmsg([hdr, frames])
        except OSError:  # punt socket full: the packets are lost like on a busy link
            log.debug("inject queue full: dropped a %d-byte relayed DATA batch", len(frames))

    def use_relay_routes(self, route: RelayRoute) -> None:
        """How apply() turns a relayed path into the relay's address and our channel there
        (the agent's RelayClient.route); without it relayed DATA goes through Python."""
        self._relay_route = route

    # -- punt channel -----------------------------------------------------------------------------
    def read_punt(self) -> PuntMessage | None:
        """One pending punt message, or None (non-blocking)."""
        sock = self.native.punt_socket
        buf = self._punt_buf
        while True:
            try:  # into one buffer: no 256 KiB allocation per message, one copy (the packet)
                n = sock.recv_into(buf)
            except BlockingIOError:
                return None
            try:
                kind, slot, index, addr, packet = parse_punt(memoryview(buf)[:n])
            except ValueError:
                self.punt_errors += 1
                continue
            peer = self._names.get(slot) if slot >= 0 else None
            return PuntMessage(kind, peer, index, addr, packet)

    def on_punt(
        self, callback: Callable[[PuntMessage], None], loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        """Deliver every punt message to `callback` from the asyncio loop."""
        self._punt_cbs.append(callback)
        if self._loop is None:
            self._loop = loop or asyncio.get_running_loop()
            self._loop.add_reader(self.native.punt_socket.fileno(), self._drain_punt)

    def _drain_punt(self) -> None:
        for _ in range(256):
            msg = self.read_punt()
            if msg is None:
                return
            for cb in list(self._punt_cbs):
                try:
                    cb(msg)
                except Exception:
                    log.exception("punt callback failed")

    async def punt_reader(self) -> AsyncIterator[PuntMessage]:
        """Async iterator over punt messages (alternative to on_punt)."""
        queue: asyncio.Queue[PuntMessage] = asyncio.Queue(maxsize=4096)

        def put(msg: PuntMessage) -> None:
            try:
                queue.put_nowait(msg)
            except asyncio.QueueFull:
                self.punt_errors += 1

        self.on_punt(put)
        try:
            while True:
                yield await queue.get()
        finally:
            self._punt_cbs.remove(put)
