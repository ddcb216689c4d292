"""ConnectionManager: the sockets around the sans-I/O peer table (enclave.proto.node.Node).

    control channel --introduce/withdraw/set_intents/set_revoked--> ConnectionManager
                                                                        |
        UDP data socket (shared)   --datagram--> demux by type byte + source:
          types 1..5 (peer traffic)    -> Node.receive_datagram(data, PathAddr(UDP, ip, port))
          relay types from our relay   -> RelayClient -> Node (PathAddr(RELAY, relay, channel))
        relay over TLS (a WebSocket to the platform, batched)
                                        -> RelayTlsClient -> Node (PathAddr(RELAY_TLS, host, ch))
          anything else                -> on_unhandled callbacks (discovery reflector replies)
        TCP data port (listen + simultaneous-open connectors, u16-framed)
                                        -> Node.receive_datagram(frame, PathAddr(TCP, ip, port))
                                                                        |
        Node.datagrams_to_send(now) -> by PathAddr transport: UDP sendto / TCP stream / relay
        Node.get_timer(), relay client's deadline -> one asyncio TimerHandle, re-armed after
                             every call into the Node (the Node's own upkeep: rtt probes,
                             relay re-offers, reconnects -- enclave/proto/upkeep.py)
        Node.next_event() -> PeerKeysUpdated -> dataplane.apply(); session/path events ->
                             peer status (`enclave peers`); UseRelay -> relay registration;
                             DataReceived -> on_data callbacks (Python reference data path)

Compiled data plane (enclave.dataplane.engine.DataPlane, set up by enclave.agent.wiring): its
native rx thread owns the UDP socket, so the ConnectionManager adds no reader there.  DATA for
installed keys never reaches Python; everything else is punted back and arrives through
receive_udp(); DATA that came over TCP / the relay is handed to dataplane.inject() (relayed
DATA for a session whose path is direct goes through inject_relayed(): the data plane reports
each one that opens as the newest on the key, and peer_relayed() follows the peer onto that
relay; a replayed one fails the replay window and moves nothing); encrypted
DATA whose path is not UDP comes back through send_on_path(); the loops' key usage reaches the
Node through report_activity().

Relay first, then direct: introduce() hands the peer's candidates to Node.connect() with the
introduction's punch time and, at the same time, registers with the platform relay using the
introduction's ticket; a registered relay channel is one more candidate, and the Node sends its
INIT there at once (re-offered every 0.25 s until the peer's channel is up too), so a pair that
cannot punch carries traffic over the relay within a round trip or two.  When the UDP relay has
not registered RELAY_TLS_AFTER seconds later, the relay over TLS (enclave.agent.relay_tls, path
relay-tls) is registered instead; when discovery found UDP blocked (set_udp_blocked: no UDP
reflection came back), the relay over TLS is registered at the introduction and the UDP relay
is not tried at all.  Meanwhile the Node's
PathManager probes all direct candidates (private first) every 100-200 ms for 5 s, picks the
best confirmed path (LAN > direct UDP > direct TCP > relay) and moves the session to it without
a new handshake; while relayed it keeps re-probing (0.5 s doubling to 2 s).  UseRelay (no
direct path after 5 s) starts birthday probing for hard NAT pairs and, when no session is up
yet, the relay over TLS regardless.  PathFailed (the current path stopped answering,
proto/upkeep.py PathWatch) registers both relays at once; the Node moves the session to the
first path that answers a probe and back to a direct one when a re-probe finds it.  `now` for
the Node is the monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from enclave import _fastpath as fp
from enclave.agent.birthday_io import BirthdayRunner, UdpSocketFactory, default_udp_socket
from enclave.agent.relay_client import RelayClient
from enclave.agent.relay_tls import RelayTlsClient
from enclave.agent.transport_tcp import (
    PortGuardLike,
    SocketFactory,
    TcpTransport,
    default_socket_factory,
)
from enclave.agent.transport_udp import UdpTransport
from enclave.agent.udp_socket import send_to
from enclave.discovery.candidates import (
    RELAYED,
    Candidate,
    CandidateKind,
    NatBehaviour,
    PathAddr,
    Transport,
)
from enclave.discovery.channel import PUNCH_DELAY
from enclave.discovery.dualstack import hostport
from enclave.discovery.introduction import WITHDRAW_OFFLINE, Introduction
from enclave.proto.events import (
    DataReceived,
    Event,
    HandshakeFailed,
    PathChanged,
    PathFailed,
    PeerKeysUpdated,
    PeerRoamed,
    PingAnswered,
    Reconnecting,
    SessionClosed,
    SessionEstablished,
    SessionRekeyed,
    UseRelay,
)
from enclave.proto.handshake import LocalCredentials, PeerIdentity, ValidatePeer
from enclave.proto.node import Node
from enclave.proto.relay_batch import pack_batch, unpack_batch
from enclave.proto.wire import (
    MSG_DATA,
    PEER_MESSAGE_TYPES,
    RELAY_MESSAGE_TYPES,
    CloseReason,
)

log = logging.getLogger("enclave.agent.connections")

HANDSHAKE_RESULTS = ("established", "rekeyed", "failed")  # handshake_counts() keys
RELAY_TLS_AFTER = 0.5  # seconds the UDP relay has to register before the relay over TLS is used
TIMER_SLACK = 0.001  # s added to each timer delay: the loop's timers round to whole ms

# data-plane counters that count dropped packets (summed into peers()[i]["drops"])
_DROP_COUNTERS: tuple[str, ...] = fp.PEER_DROP_COUNTERS

Addr = tuple[str, int]
OnUnhandled = Callable[[bytes, Addr], object]  # return value ignored
OnData = Callable[[str, bytes], None]
OnForgotten = Callable[[str], None]


class DataPlanePort(Protocol):
    """The data plane as the ConnectionManager drives it (enclave.dataplane.engine.DataPlane).
    It reads the UDP socket itself and punts back what is not DATA for its keys."""

    def apply(self, update: PeerKeysUpdated) -> None: ...

    def counters(self, peer: str) -> dict[str, int]: ...

    def inject(self, packet: bytes) -> None: ...

    def inject_frames(self, frames: bytes | memoryview) -> None: ...

    def inject_relayed(self, peer: str, frames: bytes | memoryview) -> None: ...

    def use_relay_routes(
        self, route: Callable[[PathAddr], tuple[Addr, int] | None]
    ) -> None: ...


class _SocketSender:
    """Send-only stand-in for UdpTransport while the compiled data plane reads the socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock: socket.socket | None = sock
        self.tx_packets = 0
        self.errors = 0

    def send(self, data: bytes, addr: Addr) -> None:
        if self._sock is None:
            return
        try:
            send_to(self._sock, data, addr)  # IPv4 as ::ffff:a.b.c.d on a dual-stack socket
            self.tx_packets += 1
        except OSError:  # full buffer / unreachable: control traffic is retried by the Node
            self.errors += 1

    def close(self) -> None:
        self._sock = None


@dataclass
class _PeerInfo:
    name: str
    intro: Introduction
    kinds: dict[PathAddr, CandidateKind]
    introduced_at: float  # loop time
    punch_at: float  # loop time
    state: str = "connecting"  # connecting | relay-wait | connected | closed | failed
    addr: PathAddr | None = None
    connected_at: float | None = None  # unix time
    handshake_at: float | None = None  # unix time of the latest completed handshake (or rekey)
    setup_ms: float | None = None  # introduction -> first authenticated packet
    punch_ms: float | None = None  # punch start -> first authenticated packet
    introduced_wall: float | None = None  # unix time the platform introduced the pair for the
    # session (its punch time less PUNCH_DELAY); a reconnect's start; kept over re-introductions
    rx_bytes: int = 0
    tx_bytes: int = 0
    rekeys: int = 0
    path_changes: int = 0
    path_changed_at: float | None = None  # unix time the session last moved to another path
    closed_reason: str | None = None
    offline: bool = False  # the platform said the peer is offline; its session was kept
    extra: dict[str, Any] = field(default_factory=dict)


def path_name(addr: PathAddr | None, kinds: dict[PathAddr, CandidateKind]) -> str | None:
    if addr is None:
        return None
    if addr.transport is Transport.RELAY:
        return "relay-udp"
    if addr.transport is Transport.RELAY_TLS:
        return "relay-tls"
    if addr.transport is Transport.TCP:
        return "direct-tcp"
    return "lan" if kinds.get(addr) is CandidateKind.PRIVATE else "direct-udp"


class ConnectionManager:
    def __init__(
        self,
        creds: LocalCredentials,
        validate_peer: ValidatePeer,
        *,
        udp_sock: socket.socket,
        tcp_port: int,
        dataplane: DataPlanePort | None = None,
        local_nat: NatBehaviour = NatBehaviour.UNKNOWN,
        tcp_socket_factory: SocketFactory = default_socket_factory,
        tcp_bind_host: str = "0.0.0.0",
        tcp_guard: PortGuardLike | None = None,
        udp_socket_factory: UdpSocketFactory = default_udp_socket,
    ) -> None:
        self.name = creds.name
        self._validate_outer = validate_peer
        self._revoked: set[int] = set()
        self._intents: set[str] | None = None
        self._peers: dict[str, _PeerInfo] = {}
        self._addr_peer: dict[PathAddr, str] = {}
        self._dataplane = dataplane
        self._udp_sock = udp_sock
        self._udp: UdpTransport | _SocketSender = (
            _SocketSender(udp_sock) if dataplane is not None else UdpTransport(self._on_udp)
        )
        self._tcp = TcpTransport(
            tcp_port,
            self._on_tcp,
            socket_factory=tcp_socket_factory,
            bind_host=tcp_bind_host,
            guard=tcp_guard,
            on_frames=self._on_frames if dataplane is not None else None,
        )
        self._relay = RelayClient()
        if dataplane is not None:  # the UDP relay's DATA: sent and taken by the fast path
            dataplane.use_relay_routes(self._relay.route)
        self._relay_tls: RelayTlsClient | None = None  # use_relay_tls()
        self._unhandled: list[OnUnhandled] = []
        self._on_data: list[OnData] = []
        self._on_forgotten: list[OnForgotten] = []
        # operator pings in flight: the PONG and when it arrived (time.perf_counter)
        self._pings: dict[int, asyncio.Future[tuple[PingAnswered, float]]] = {}
        self._wall_offset = time.time() - time.monotonic()  # _now() is monotonic
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._running = False
        self._handshakes = dict.fromkeys(HANDSHAKE_RESULTS, 0)  # handshake_counts()
        # peers whose DATA came over a relay while their session's path is direct (bounded
        # by the peers; _relayed_for / peer_relayed)
        self._relayed_rx: dict[str, PathAddr] = {}
        self._udp_blocked = False  # set_udp_blocked(): no UDP reflection came back
        self.node = Node(
            creds,
            self._validate,
            self._intends,
            wall_offset=self._wall_offset,  # INIT timestamps are unix nanoseconds
            local_nat=local_nat,
        )
        # birthday probing (issue 13 item 6): symmetric <-> port-restricted pairs after the
        # punch failed; the daemon keeps birthday.local_nat current from discovery
        self.birthday = BirthdayRunner(self.node.punch_message, self.node.peer_addr, self.sendto,
                                       udp_sock, udp_socket_factory, local_nat=local_nat)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wall_offset = time.time() - time.monotonic()
        if isinstance(self._udp, UdpTransport):
            await self._udp.start(self._udp_sock)
        await self._tcp.start()
        self._running = True
        self._pump()

    async def stop(self) -> None:
        """Close every session (peers are told), then release the sockets."""
        if not self._running:
            return
        now = self._now()
        for name in list(self._peers):
            self.node.close(name, now, CloseReason.LOCAL)
        self._flush(now)
        self._drain_events(now)
        self._running = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.birthday.close()
        self._udp.close()
        await self._tcp.close()
        if self._relay_tls is not None:
            await self._relay_tls.close()

    def use_relay_tls(self, url: str, pin: str) -> None:
        """Relay over TLS through the platform at `url` (its TLS key pinned to `pin`) when no
        direct path works, alongside the UDP relay (which ranks better when both register)."""
        host = urlsplit(url).hostname or ""
        self._relay_tls = RelayTlsClient(
            url, pin, host, self._on_relay_tls, self._relay_tls_registered,
            on_frames=self._on_frames if self._dataplane is not None else None)

    @property
    def tcp_port(self) -> int:
        return self._tcp.port

    # ------------------------------------------------------------------ control inputs
    def introduce(self, intro: Introduction) -> None:
        """Start (or refresh) punching towards `intro.peer` at its candidates."""
        if intro.peer == self.name:
            raise ValueError("introduced to ourselves")
        now = self._now()
        punch_at = max(now, intro.punch_at - self._wall_offset)
        kinds = {c.addr: c.kind for c in intro.candidates}
        old = self._peers.get(intro.peer)
        info = _PeerInfo(intro.peer, intro, kinds, now, punch_at)
        if old is not None and old.state == "connected":
            info.state, info.addr, info.connected_at = old.state, old.addr, old.connected_at
            info.setup_ms, info.punch_ms = old.setup_ms, old.punch_ms
            info.introduced_wall = old.introduced_wall
            info.handshake_at = old.handshake_at
            info.rx_bytes, info.tx_bytes = old.rx_bytes, old.tx_bytes
            info.rekeys, info.path_changes = old.rekeys, old.path_changes
            info.path_changed_at = old.path_changed_at
            info.extra = dict(old.extra)  # the session's certified overlay IP
        if info.introduced_wall is None:
            info.introduced_wall = intro.punch_at - PUNCH_DELAY
        self._peers[intro.peer] = info
        # the peer's addresses: its current candidates and path only (bounded, not appended)
        for a in [a for a, n in self._addr_peer.items() if n == intro.peer and a != info.addr
                  and a.transport not in RELAYED]:
            del self._addr_peer[a]
        for c in intro.candidates:
            self._addr_peer[c.addr] = intro.peer
        self._tcp.allow_peer(intro.peer, [c.addr.host for c in intro.candidates
                                          if c.addr.transport not in RELAYED])
        ident = self._validate(intro.cert_der)  # its public key keys our INITs' MAC1
        if ident is None or ident.name != intro.peer:
            log.warning("introduced to %.64s with a certificate that does not check out; "
                        "not connecting", intro.peer)
        else:
            self.node.connect(intro.peer, list(intro.candidates), now, punch_at=punch_at,
                              peer_key=ident.public_key)
            # relay-first, beside the punch; over TLS at once when UDP is known blocked
            self._offer_relays(intro.peer, now, tls_now=self._udp_blocked)
        self._pump()

    def _offer_relays(self, peer: str, now: float, *, tls_now: bool) -> None:
        """Register `peer`'s relay channels from its introduction's ticket: the UDP relay at
        once; over TLS at once when `tls_now`, else only when the UDP relay has not registered
        RELAY_TLS_AFTER later; the UDP relay not at all while UDP is known blocked.  A channel
        already registered is offered to the Node again (a re-introduction gave it a fresh
        PathManager)."""
        info = self._peers.get(peer)
        if info is None or info.intro.relay is None or info.intro.relay_ticket is None:
            return
        ticket, relay = info.intro.relay_ticket, (info.intro.relay.host, info.intro.relay.port)
        path = self._relay.path_for(peer)
        got = self._relay.rtt(peer)
        if path is not None and self._relay.registered(peer) and got and got[0] == relay:
            self._offer_path(peer, path, now)
        elif not self._udp_blocked:
            for out, dst in self._relay.add(peer, relay, ticket, now):
                self._udp.send(out, dst)
        if self._relay_tls is None or not self._running:
            return
        tls_path = self._relay_tls.path_for(peer)
        if tls_path is not None and self._relay_tls.registered(peer):
            self._offer_path(peer, tls_path, now)
        elif tls_now:
            self._relay_tls.add(peer, ticket)
        elif self._loop is not None:
            self._loop.call_later(RELAY_TLS_AFTER, self._relay_tls_if_needed, peer)

    def _offer_path(self, peer: str, path: PathAddr, now: float) -> None:
        """A registered relay channel towards `peer`: one more candidate for the Node."""
        info = self._peers.get(peer)
        if info is None:
            return
        self._addr_peer[path] = peer
        info.kinds[path] = CandidateKind.RELAY
        self.node.add_candidate(peer, Candidate(path, CandidateKind.RELAY), now)

    def refresh_ticket(self, peer: str, ticket: bytes) -> None:
        """The platform re-issued `peer`'s relay ticket: later registrations carry it (a
        registered channel re-registers at once, so the relay extends it)."""
        info = self._peers.get(peer)
        if info is None:
            return
        info.intro = dataclasses.replace(info.intro, relay_ticket=ticket)
        for out, dst in self._relay.set_ticket(peer, ticket, self._now()):
            self._udp.send(out, dst)
        if self._relay_tls is not None:
            self._relay_tls.set_ticket(peer, ticket)
        self._pump()

    def withdraw(self, peer: str, reason: str) -> bool:
        """Intent withdrawn / peer revoked / disabled / expired: close the session and forget
        the peer (True).  "offline" (the peer lost its control channel) is only a hint: a
        connected session stays up (False) until the peer closes it, dead-peer detection ends
        it, or the CRL / expiry invalidates it; the peer is forgotten then."""
        info = self._peers.get(peer)
        if reason == WITHDRAW_OFFLINE and info is not None and info.state == "connected":
            if not info.offline:
                log.info("platform says %s is offline; the working session stays up", peer)
            info.offline = True
            return False
        self._forget(peer, self._now())
        if info is not None:
            log.info("peer %s withdrawn (%s)", peer, reason)
        self._pump()
        return True

    def _forget(self, peer: str, now: float) -> None:
        self._peers.pop(peer, None)
        self.node.close(peer, now, CloseReason.LOCAL)
        self._relay.remove(peer)
        if self._relay_tls is not None:
            self._relay_tls.remove(peer)
        self._tcp.forget_peer(peer)
        self.birthday.forget(peer)
        self._relayed_rx.pop(peer, None)
        for a in [a for a, n in self._addr_peer.items() if n == peer]:
            del self._addr_peer[a]

    def set_intents(self, names: Iterable[str]) -> None:
        self._intents = set(names)
        self.node.revalidate(self._now())
        self._pump()

    def set_revoked(self, serials: Iterable[int]) -> None:
        self._revoked = set(serials)
        self.node.revalidate(self._now())
        self._pump()

    def set_local_nat(self, nat: NatBehaviour) -> None:
        """Our NAT as discovery classified it (birthday probing picks its side by it)."""
        self.birthday.local_nat = nat

    def set_udp_blocked(self, blocked: bool) -> None:
        """Discovery's finding: no UDP reflection came back (the site drops UDP).  While it
        holds, introductions register the relay over TLS at once and skip the UDP relay."""
        if blocked != self._udp_blocked:
            log.info("UDP %s: relay over %s first", "blocked" if blocked else "reachable",
                     "TLS" if blocked else "UDP")
        self._udp_blocked = blocked

    def on_unhandled(self, callback: OnUnhandled) -> None:
        self._unhandled.append(callback)

    def on_data(self, callback: OnData) -> None:
        self._on_data.append(callback)

    def on_forgotten(self, callback: OnForgotten) -> None:
        """`callback(peer)` when the manager forgets a peer by itself: a session it kept on an
        "offline" hint has ended (the owner drops what it keeps for that peer as well)."""
        self._on_forgotten.append(callback)

    def sendto(self, data: bytes, addr: Addr) -> None:
        """Send a non-peer datagram from the data socket (e.g. a discovery reflection request)."""
        self._udp.send(data, addr)

    def send_data(self, peer: str, frame: bytes) -> bool:
        """Python reference data path: one Ethernet frame to `peer` (False: no session)."""
        ok = self.node.send_data(peer, frame, self._now())
        self._pump()
        return ok

    # ------------------------------------------------------------------ compiled data plane
    def receive_udp(self, data: bytes, src: Addr) -> None:
        """A datagram the data plane punted (handshake, CONTROL, unknown index, reflector)."""
        self._on_udp(data, src)

    def send_on_path(self, peer: str, frames: bytes) -> bool:
        """Send a batch of encrypted DATA packets (framed: u16 length | packet, repeated) on
        `peer`'s current path that is not UDP: as it is to a TCP stream or as one WebSocket
        message; one by one to the UDP relay (only while it has no native route)."""
        addr = self.node.peer_addr(peer)
        if not isinstance(addr, PathAddr):
            return False
        if addr.transport is Transport.TCP:
            return self._tcp.send_frames(frames, addr)
        if addr.transport is Transport.RELAY_TLS:
            return self._relay_tls is not None and self._relay_tls.send_frames(frames, addr)
        for packet in unpack_batch(frames) or []:
            if addr.transport is Transport.RELAY:
                wrapped = self._relay.wrap(packet, addr)
                if wrapped is not None:
                    self._udp.send(*wrapped)
            else:
                self._udp.send(packet, (addr.host, addr.port))
        return True

    def _on_frames(self, frames: bytes | memoryview, addr: PathAddr) -> None:
        """A run of DATA packets from a TCP stream or the relay over TLS, still framed: to
        the data plane in one message (relayed for a session on a direct path: _relayed_for)."""
        if self._dataplane is None:
            return
        peer = self._relayed_for(addr)
        if peer is not None:
            self._dataplane.inject_relayed(peer, frames)
        else:
            self._dataplane.inject_frames(frames)

    def _relayed_for(self, addr: PathAddr) -> str | None:
        """The peer whose DATA `addr` (a relay path, checked by its relay client: our channel,
        from the relay's address) brought while its session's path is direct: the peer may
        have found that path dead and moved to the relay.  The data plane says so only for a
        packet that opens as the newest on its current key (peer_relayed); remembered here
        is the path to follow it onto."""
        peer = self._addr_peer.get(addr) if addr.transport in RELAYED else None
        info = self._peers.get(peer) if peer is not None else None
        if info is None or info.addr is None or info.addr.transport in RELAYED:
            return None
        self._relayed_rx[info.name] = addr
        return info.name

    def peer_relayed(self, peer: str, local_index: int) -> None:
        """The data plane opened DATA that a relay brought for `peer` (while its path is
        direct) as the newest packet on its key `local_index`: fresh and authentic, so the peer
        itself sends over the relay now (it found the direct path dead), while our sends still
        take that path.  Our side follows onto the relay path too, as a roam (Node.peer_roamed:
        current keys only; the paths it left must answer afresh), and both come back together
        when a re-probe finds the direct path.  A replay of relayed DATA (from the relay's
        address) fails the replay window in the data plane and never gets here."""
        path = self._relayed_rx.pop(peer, None)
        info = self._peers.get(peer)
        if path is None or info is None or info.addr is None or info.addr.transport in RELAYED:
            return
        if self.node.peer_roamed(local_index, path, self._now()):
            log.info("%s now sends over the relay; following it there", peer)
        self._pump()

    def report_activity(self, local_index: int, *, rx: bool, tx_messages: int | None) -> None:
        """What the data plane did with a key (Node keepalive / dead-peer / rekey inputs)."""
        self.node.report_activity(local_index, self._now(), rx=rx, tx_messages=tx_messages)
        self._pump()

    def peer_roamed(self, peer: str, addr: Addr, local_index: int) -> None:
        """The data plane saw `peer`'s newest packet on key `local_index` from a new UDP
        address (and already sends there): the Node moves the session too, so its next key
        update keeps the new address instead of resetting the data plane to the old one."""
        if self.node.peer_roamed(local_index, PathAddr(Transport.UDP, addr[0], addr[1]),
                                 self._now()):
            log.info("%s roamed to %s:%s", peer, addr[0], addr[1])
        self._pump()

    async def ping(self, peer: str, timeout: float) -> dict[str, Any] | None:
        """An operator's ping (`enclave ping`) on `peer`'s current path: path, endpoint and
        rtt_ms of the authenticated PONG, or None (no session, or no PONG within `timeout`).
        The round trip is timed with time.perf_counter (the loop's clock may tick in ms)."""
        if self._loop is None:
            return None
        sent = time.perf_counter()
        ping_id = self.node.send_ping(peer, self._now())
        if ping_id is None:
            return None
        fut: asyncio.Future[tuple[PingAnswered, float]] = self._loop.create_future()
        self._pings[ping_id] = fut
        self._pump()
        try:
            ans, received = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return None
        finally:
            self._pings.pop(ping_id, None)
        info = self._peers.get(peer)
        addr = ans.addr if isinstance(ans.addr, PathAddr) else None
        return {
            "path": path_name(addr, info.kinds if info is not None else {}),
            "endpoint": None if addr is None else hostport(addr.host, addr.port),
            "rtt_ms": round((received - sent) * 1000, 3),
        }

    def counters(self) -> dict[str, int]:
        """Packets the Node dropped silently, by reason (`enclave status --json`)."""
        return self.node.counters()

    def handshake_counts(self) -> dict[str, int]:
        """Handshakes so far by result: established, rekeyed, failed (gave up retrying)."""
        return dict(self._handshakes)

    # ------------------------------------------------------------------ status
    def peers(self) -> list[dict[str, Any]]:
        out = []
        for info in sorted(self._peers.values(), key=lambda i: i.name):
            rtt = self.node.rtt(info.name)
            relay = self._relay.rtt(info.name)
            keys = self.node.session(info.name) if info.state == "connected" else None
            d: dict[str, Any] = {
                "name": info.name,
                "state": info.state,
                "path": path_name(info.addr, info.kinds) if info.state == "connected" else None,
                "endpoint": None if info.addr is None else hostport(info.addr.host,
                                                                    info.addr.port),
                "transport": None if info.addr is None else info.addr.transport.value,
                "rx_bytes": info.rx_bytes,
                "tx_bytes": info.tx_bytes,
                "rtt_ms": None if rtt is None else round(rtt * 1000, 3),
                "connected_at": info.connected_at,
                "introduced_at": info.introduced_wall,
                "last_handshake_at": info.handshake_at,
                "setup_ms": info.setup_ms,
                "punch_ms": info.punch_ms,
                "rekeys": info.rekeys,
                "path_changes": info.path_changes,
                "relay_registered": self._relay.registered(info.name),
                "relay_tls_registered": self._relay_tls is not None
                and self._relay_tls.registered(info.name),
                "relay_tls_aqm": None if self._relay_tls is None
                else self._relay_tls.aqm_counters(info.name),
                "path_changed_at": info.path_changed_at,
                "relay": None if relay is None else hostport(relay[0][0], relay[0][1]),
                "relay_rtt_ms": None if relay is None or relay[1] is None
                else round(relay[1] * 1000, 3),
                "closed_reason": info.closed_reason,
                "cipher": None if keys is None else keys.cipher.name.lower(),
            }
            d.update(info.extra)
            run = self.birthday.result(info.name)  # birthday probing towards it, if any
            d["birthday"] = None if run is None else run.to_json()
            if self._dataplane is not None:
                with contextlib.suppress(Exception):
                    dp = self._dataplane.counters(info.name)
                    d["dataplane"] = dp
                    if dp:
                        d["control_rx_bytes"], d["control_tx_bytes"] = d["rx_bytes"], d["tx_bytes"]
                        d["rx_bytes"] = info.rx_bytes + int(dp.get("rx_bytes", 0))
                        d["tx_bytes"] = info.tx_bytes + int(dp.get("tx_bytes", 0))
                        d["rx_frames"] = int(dp.get("rx_frames", 0))
                        d["tx_frames"] = int(dp.get("tx_frames", 0))
                        d["drops"] = sum(int(dp.get(k, 0)) for k in _DROP_COUNTERS)
            out.append(d)
        return out

    def peer(self, name: str) -> dict[str, Any] | None:
        return next((p for p in self.peers() if p["name"] == name), None)

    # ------------------------------------------------------------------ validation
    def _validate(self, der: bytes) -> PeerIdentity | None:
        ident = self._validate_outer(der)
        if ident is None:
            return None
        if ident.serial in self._revoked:
            return None
        return ident

    def _intends(self, name: str) -> bool:
        # authenticate-before-connect: only peers the platform introduced (mutual intent),
        # narrowed by our own intents once the control channel has told us them
        return name in self._peers and (self._intents is None or name in self._intents)

    # ------------------------------------------------------------------ inbound
    def _now(self) -> float:
        # CLOCK_MONOTONIC at full resolution: uvloop's loop.time() ticks in whole milliseconds,
        # which made a sub-millisecond rtt probe read 0 (same clock base, so timers still
        # agree with the loop's: _arm converts deadlines to delays)
        return time.monotonic()

    def _on_udp(self, data: bytes, src: Addr) -> None:
        kind = data[0] if len(data) >= 4 and data[1:4] == b"\x00\x00\x00" else -1
        now = self._now()
        if kind in PEER_MESSAGE_TYPES:
            self._to_node(data, PathAddr(Transport.UDP, src[0], src[1]), now)
        elif kind in RELAY_MESSAGE_TYPES and self._relay.is_relay(src):
            self._on_relay(data, src, now)
        else:
            for cb in self._unhandled:
                cb(data, src)

    def _on_relay_tls(self, data: bytes, path: PathAddr) -> None:
        self._to_node(data, path, self._now())

    def _relay_tls_if_needed(self, peer: str) -> None:
        info = self._peers.get(peer)
        if (not self._running or self._relay_tls is None or info is None
                or info.intro.relay_ticket is None or self._relay.registered(peer)):
            return
        self._relay_tls.add(peer, info.intro.relay_ticket)

    def _relay_tls_registered(self, peer: str, path: PathAddr) -> None:
        """The relay over TLS took `peer`'s channel: one more candidate (ranked last)."""
        self._offer_path(peer, path, self._now())
        self._pump()

    def _on_tcp(self, data: bytes, addr: PathAddr) -> None:
        self._to_node(data, addr, self._now())

    def _to_node(self, data: bytes, addr: PathAddr, now: float) -> None:
        peer = self._addr_peer.get(addr)
        if (self._dataplane is not None and addr.transport is not Transport.UDP
                and data[:1] == bytes([MSG_DATA])):
            # DATA over TCP / the relay: decrypted by the data plane (DATA it punted from UDP
            # has an unknown index: the Node drops it, never back into the loops)
            relayed_for = self._relayed_for(addr)
            if relayed_for is not None:
                self._dataplane.inject_relayed(relayed_for, pack_batch([data]))
            else:
                self._dataplane.inject(data)
            return
        if peer is not None and peer in self._peers:
            self._peers[peer].rx_bytes += len(data)
        self.node.receive_datagram(data, addr, now)
        self._pump()

    def _on_relay(self, data: bytes, src: Addr, now: float) -> None:
        got = self._relay.receive(data, src, now)
        if got is None:
            return
        if got.kind == "data" and got.path is not None:
            self._to_node(got.message, got.path, now)
            return
        for out, dst in got.send:
            self._udp.send(out, dst)
        path = self._relay.path_for(got.peer)
        if got.kind == "registered" and path is not None:
            self._offer_path(got.peer, path, now)
        self._pump()

    # ------------------------------------------------------------------ outbound, timers
    def _pump(self) -> None:
        if not self._running:
            return
        now = self._now()
        self._flush(now)
        self._drain_events(now)
        self._flush(now)
        self._arm(now)

    def _flush(self, now: float) -> None:
        for data, addr in self.node.datagrams_to_send(now):
            assert isinstance(addr, PathAddr)
            peer = self._addr_peer.get(addr)
            if peer is not None and peer in self._peers:
                self._peers[peer].tx_bytes += len(data)
            if addr.transport is Transport.UDP:
                self._udp.send(data, (addr.host, addr.port))
            elif addr.transport is Transport.TCP:
                self._tcp.send(data, addr)
            elif addr.transport is Transport.RELAY_TLS:
                if self._relay_tls is not None:
                    self._relay_tls.send(data, addr)
            else:
                wrapped = self._relay.wrap(data, addr)
                if wrapped is not None:
                    self._udp.send(*wrapped)

    def _arm(self, now: float) -> None:
        """One deadline: the earliest of the Node's and the relay client's (both sans-I/O)."""
        times = [t for t in (self.node.get_timer(), self._relay.next_deadline()) if t is not None]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if times and self._loop is not None:
            # + TIMER_SLACK: the loop's timers round to whole milliseconds; firing a little late
            # never finds the deadline not yet due (no spin of empty wake-ups)
            delay = max(0.0, min(times) - now) + TIMER_SLACK
            self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._running:
            return
        try:
            self._timers(self._now())
        except Exception:  # a bug must not stop the timer: log it and keep going
            log.exception("connection manager timer failed")
        self._pump()

    def _timers(self, now: float) -> None:
        t = self.node.get_timer()
        if t is not None and t <= now:
            self.node.handle_timer(now)
        for out, dst in self._relay.due(now):
            self._udp.send(out, dst)

    # ------------------------------------------------------------------ events
    def _drain_events(self, now: float) -> None:
        while (ev := self.node.next_event()) is not None:
            try:
                self._on_event(ev, now)
            except Exception:
                log.exception("error while handling %r", type(ev).__name__)

    def _learn(self, info: _PeerInfo, addr: object) -> None:
        if isinstance(addr, PathAddr):
            old = info.addr
            if old is not None and old != addr and old not in info.kinds:
                self._addr_peer.pop(old, None)  # a learnt path left behind: not kept
            info.addr = addr
            self._addr_peer[addr] = info.name
            if addr.transport is Transport.TCP:
                self._tcp.authenticate(addr)  # a session runs over it: off the deadline

    def _on_event(self, ev: Event, now: float) -> None:
        info = self._peers.get(ev.peer)
        if isinstance(ev, PeerKeysUpdated):
            if self._dataplane is not None:
                self._dataplane.apply(ev)
            if info is not None and ev.addr is not None:
                self._learn(info, ev.addr)
            return
        if isinstance(ev, DataReceived):
            for cb in self._on_data:
                cb(ev.peer, ev.frame)
            return
        if isinstance(ev, PingAnswered):
            waiter = self._pings.get(ev.ping_id)
            if waiter is not None and not waiter.done():
                waiter.set_result((ev, time.perf_counter()))
            return
        if info is None:
            return
        if isinstance(ev, SessionEstablished):
            self._handshakes["established"] += 1
            self._learn(info, ev.addr)
            info.extra["overlay_ip"] = str(ev.identity.overlay_ip)
            if ev.identity.overlay_ip6 is not None:
                info.extra["overlay_ip6"] = str(ev.identity.overlay_ip6)
            info.state = "connected"
            info.connected_at = info.handshake_at = now + self._wall_offset
            info.setup_ms = round((now - info.introduced_at) * 1000, 1)
            info.punch_ms = round(max(0.0, now - info.punch_at) * 1000, 1)
            info.closed_reason = None
            log.info(
                "session with %s up over %s %s in %.0f ms",
                ev.peer,
                path_name(info.addr, info.kinds),
                info.addr,
                info.setup_ms,
            )
        elif isinstance(ev, SessionRekeyed):
            self._handshakes["rekeyed"] += 1
            info.rekeys += 1
            info.handshake_at = now + self._wall_offset
        elif isinstance(ev, (PeerRoamed, PathChanged)):
            before = path_name(info.addr, info.kinds)
            self._learn(info, ev.addr)
            info.path_changes += 1
            info.path_changed_at = now + self._wall_offset
            log.info("session with %s moved from %s to %s %s", ev.peer, before,
                     path_name(info.addr, info.kinds), info.addr)
        elif isinstance(ev, SessionClosed):
            info.state = "closed"
            info.closed_reason = ev.reason.name.lower()
            if info.offline:  # kept after an "offline" hint: nothing to reconnect to
                log.info("session with %s ended (%s) while it was offline; forgotten",
                         ev.peer, info.closed_reason)
                self._forget(ev.peer, now)  # also cancels the Node's pending reconnect
                for forgotten in self._on_forgotten:
                    forgotten(ev.peer)
        elif isinstance(ev, Reconnecting):  # the Node connects again after a lost session
            info.state = "connecting"
            info.introduced_at = info.punch_at = now
            info.introduced_wall = now + self._wall_offset
        elif isinstance(ev, HandshakeFailed):
            self._handshakes["failed"] += 1
            if info.state != "connected":
                info.state = "failed"
        elif isinstance(ev, UseRelay):  # the ordinary punch found no direct path
            intro = info.intro
            # the relays were registered at the introduction and may carry the session
            # already; birthday probing may still find a direct path for hard NAT pairs
            self.birthday.punch_failed(ev.peer, intro)
            if intro.relay is None or intro.relay_ticket is None:
                log.info("no direct path to %s and no relay offered", ev.peer)
                return
            if info.state != "connected":
                info.state = "relay-wait"
            # no session by now: over TLS too, whatever our UDP relay did (the peer's site
            # may drop UDP where ours does not)
            self._offer_relays(ev.peer, now, tls_now=info.state != "connected")
        elif isinstance(ev, PathFailed):  # the Node probes the other paths and moves over
            log.info("path %s to %s stopped answering; trying the others",
                     path_name(ev.addr if isinstance(ev.addr, PathAddr) else None, info.kinds),
                     ev.peer)
            self._offer_relays(ev.peer, now, tls_now=True)
