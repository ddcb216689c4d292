"""DataPlane: the object the agent drives — TAP + UDP socket + the compiled per-direction loops.

    ConnectionManager (asyncio)                      enclave._fastpath.DataPlane (native)
    ---------------------------                      ------------------------------------
    install_peer(peer, PeerKeysUpdated, mac, gw) --> slot: keys, indices, address, MAC (atomic)
    remove_peer(peer)                            --> slot emptied, learned MACs forgotten
    peer_counters(peer)                          <-- frames/bytes/drops per peer
    on_punt(cb) / punt_reader()                  <-- punt socket: handshakes, CONTROL, unknown
                                                     indices (DATAGRAM), FIRST_RX, ROAMED,
                                                     TX (encrypted DATA for TCP/relay paths)
    send_raw(data, addr)                         --> same UDP socket (Python-originated packets)
    inject(packet)                               --> DATA that arrived over TCP / the relay
    poll_activity()                              <-- (peer, local index, rx?, tx messages) for
                                                     Node.report_activity

    TAP enclave0 --[tx thread: switch, TSO split, seal, sendmmsg/GSO]--> UDP socket
    TAP enclave0 <--[rx thread: recvmmsg/GRO, replay, open, anti-spoof, GRO]-- UDP socket

Offloads (each with a start-up self-test and a kill switch, ``offload=False``):
  TAP: IFF_VNET_HDR + TUNSETOFFLOAD(CSUM|TSO4|TSO6) (TapDevice); refused -> plain frames.
  UDP: UDP_SEGMENT (getsockopt probe; EIO/EINVAL at send time -> plain datagrams, counted in
       gso_fallbacks), UDP_GRO (setsockopt; refused -> one datagram per recv slot).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from enclave import _fastpath as fp
from enclave.dataplane.mtu import DEFAULT_OVERLAY_MTU
from enclave.dataplane.tap import DEFAULT_NAME, TapDevice
from enclave.discovery.candidates import PathAddr, Transport
from enclave.proto.events import PeerKeysUpdated

log = logging.getLogger(__name__)

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
PUNT_RECV_SIZE = 65536 + fp.PUNT_HEADER_LEN

_PUNT_HDR = struct.Struct("<BBHiI16s")  # kind, family, port (BE, fixed below), slot, index, addr


@dataclass(frozen=True)
class PuntMessage:
    """One message from the native loops (layout: enclave/_fp_punt.pxi)."""

    kind: int  # fp.PUNT_DATAGRAM | PUNT_FIRST_RX | PUNT_ROAMED | PUNT_TX
    peer: str | None  # for FIRST_RX / ROAMED / TX
    local_index: int
    addr: tuple[str, int] | None
    packet: bytes


def parse_punt(raw: bytes) -> tuple[int, int, int, tuple[str, int] | None, bytes]:
    """(kind, slot, index, addr, packet) of one punt message; ValueError if malformed."""
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


def enable_udp_gro(sock: socket.socket) -> bool:
    """Turn on UDP_GRO (coalesced receive) on the socket; False if the kernel refuses."""
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def _udp_target(addr: object) -> tuple[tuple[str, int] | None, bool]:
    """(UDP address, via_python) for a Node address (PathAddr or (host, port))."""
    if addr is None:
        return None, False
    if isinstance(addr, PathAddr):
        if addr.transport is not Transport.UDP:
            return None, True
        return (addr.host, addr.port), False
    if isinstance(addr, tuple) and len(addr) == 2:
        return (str(addr[0]), int(addr[1])), False
    raise ValueError(f"unsupported peer address {addr!r}")


class DataPlane:
    """TAP device + UDP socket + native loops, addressed by peer name.

    ``tap`` and ``udp_sock`` stay owned by the caller unless the DataPlane created them
    (``DataPlane.open``). ``identity_of(peer) -> (mac, allow_bridging) | None`` lets
    ``install(peer, update)`` (the ConnectionManager's DataPlaneLike shape) find the peer's
    certified MAC; ``install_peer`` takes it explicitly.
    """

    def __init__(
        self,
        tap: TapDevice,
        udp_sock: socket.socket,
        *,
        offload: bool = True,
        mtu: int | None = None,
        max_peers: int = 256,
        identity_of: Callable[[str], tuple[bytes, bool] | None] | None = None,
        owns_tap: bool = False,
        udp_offload: bool | None = None,
    ) -> None:
        self.tap = tap
        self.udp_sock = udp_sock
        self.mtu = tap.mtu if mtu is None else mtu
        udp_off = offload if udp_offload is None else udp_offload  # None: follow `offload`
        self.udp_gso = udp_off and udp_gso_supported(udp_sock)
        self.udp_gro = udp_off and enable_udp_gro(udp_sock)
        self.tap_gro = offload and tap.vnet_hdr and bool(tap.offload)
        udp_sock.setblocking(False)
        self.socket_buffers = grow_socket_buffers(udp_sock)
        self.native = fp.DataPlane(
            tap.fd,
            udp_sock.fileno(),
            vnet_hdr=tap.vnet_hdr,
            tap_gro=self.tap_gro,
            udp_gso=self.udp_gso,
            udp_gro=self.udp_gro,
            mtu=self.mtu,
            max_peers=max_peers,
        )
        self._identity_of = identity_of
        self._owns_tap = owns_tap
        self._slots: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self._free = list(range(max_peers - 1, -1, -1))
        self._activity: dict[tuple[int, int], tuple[int, int | None]] = {}
        self._punt_cbs: list[Callable[[PuntMessage], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.punt_errors = 0

    @classmethod
    def open(
        cls,
        udp_sock: socket.socket,
        *,
        name: str = DEFAULT_NAME,
        mac: bytes | str | None = None,
        address: str | ipaddress.IPv4Interface | None = None,
        mtu: int = DEFAULT_OVERLAY_MTU,
        offload: bool = True,
        netns: str | None = None,
        max_peers: int = 256,
        identity_of: Callable[[str], tuple[bytes, bool] | None] | None = None,
    ) -> DataPlane:
        """Create the TAP (MAC + overlay address from the certificate) and the data plane."""
        if isinstance(mac, bytes):
            mac = ":".join(f"{b:02x}" for b in mac)
        tap = TapDevice(
            name,
            mac=mac,
            address=None if address is None else str(address),
            mtu=mtu,
            vnet_hdr=offload,
            offload=offload,
            netns=netns,
        )
        try:
            return cls(
                tap,
                udp_sock,
                offload=offload,
                mtu=mtu,
                max_peers=max_peers,
                identity_of=identity_of,
                owns_tap=True,
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
        if self._owns_tap:
            self.tap.close()

    def __enter__(self) -> DataPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {
            "tap": self.tap.name,
            "mtu": self.mtu,
            "vnet_hdr": self.tap.vnet_hdr,
            "tap_offload": self.tap.offload,
            "tap_gro": self.tap_gro,
            "udp_gso": self.udp_gso,
            "udp_gro": self.udp_gro,
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

    def install_peer(
        self, peer: str, update: PeerKeysUpdated, identity_mac: bytes, allow_bridging: bool
    ) -> None:
        """Install the Node's complete key state for `peer` (replaces whatever it had)."""
        if update.tx is None and not update.rx:
            self.remove_peer(peer)
            return
        addr, via_python = _udp_target(update.addr)
        new = peer not in self._slots
        slot = self._slot_for(peer)
        tx = None
        if update.tx is not None:
            tx = (update.tx.remote_index, update.tx.tx_key, int(update.tx.cipher))
        rx = [(k.local_index, k.rx_key, int(k.cipher)) for k in update.rx]
        try:
            self.native.install(
                slot,
                identity_mac,
                allow_bridging,
                addr,
                tx,
                rx,
                tx_local_index=None if update.tx is None else update.tx.local_index,
                via_python=via_python,
            )
        except BaseException:
            if new:
                self._release(peer)
            raise

    def install(self, peer: str, update: PeerKeysUpdated) -> None:
        """DataPlaneLike.install: identity (MAC, bridging) from ``identity_of``."""
        if update.tx is None and not update.rx:
            self.remove_peer(peer)
            return
        ident = self._identity_of(peer) if self._identity_of is not None else None
        if ident is None:
            log.warning("no certified MAC known for %s: data plane session not installed", peer)
            return
        self.install_peer(peer, update, ident[0], ident[1])

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

    remove = remove_peer

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
        self.native.inject(packet)

    # -- punt channel -----------------------------------------------------------------------------
    def read_punt(self) -> PuntMessage | None:
        """One pending punt message, or None (non-blocking)."""
        sock = self.native.punt_socket
        while True:
            try:
                raw = sock.recv(PUNT_RECV_SIZE)
            except BlockingIOError:
                return None
            try:
                kind, slot, index, addr, packet = parse_punt(raw)
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
