"""Birthday probing on real sockets (the I/O around enclave.discovery.birthday).

Started by the ConnectionManager when the ordinary punch to a peer failed (the Node's UseRelay)
and the pair is symmetric NAT <-> endpoint-independent NAT; the relay is registered at the
same time and carries the session whenever the run does not win.

    easy side (endpoint-independent NAT)       hard side (symmetric NAT)
    data socket --punch message--> Pb:random   `sockets` extra UDP sockets, each connect()ed to
    (Node.punch_message: INIT before a          the peer's public Pa:pa, one punch message each
     session, authenticated PROBE with one)     (a NAT mapping each; the kernel drops what
                                                does not come from Pa:pa)
                                                   |  a packet arrives on socket i
                                                   v
                                                loopback socket L_i, connect()ed to the data
                                                socket: socket i <-> L_i forwarded both ways
                                                (_Forwarder), so the Node and the data plane
                                                see the peer at L_i's address (path direct-udp)
                                                and answer only what authenticates; our punch
                                                message goes out through L_i every 100 ms

    won: the Node's path for the peer is the hard side's public IP (easy side) / an L_i address
    or the easy side's public address (hard side): the run stops; the forwarders that heard the
    peer stay for the session (the two sides may have settled on different ones), the rest close.
    lost: after BirthdayLimits.duration everything closes; the relay has the session.
    No run starts while the session already runs on a direct UDP path.

The hard side's forwarders run on the event loop: the compiled data plane owns one UDP socket
and sends to L_i at full speed; each forwarder socket takes coalesced runs (UDP_GRO) and passes
a run on with one UDP_SEGMENT send (one datagram at a time where the kernel refuses GSO).  At
most MAX_HARD_RUNS hard runs (256 sockets each) at once; more peers needing one use the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import logging
import random
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from enclave.dataplane.engine import (
    SOL_UDP,
    UDP_GRO,
    UDP_SEGMENT,
    enable_udp_gro,
    grow_socket_buffers,
    udp_gso_supported,
)
from enclave.discovery.birthday import (
    BirthdayLimits,
    BirthdayRole,
    EasyProber,
    HardOpener,
    role_for,
)
from enclave.discovery.candidates import CandidateKind, NatBehaviour, PathAddr, Transport
from enclave.discovery.introduction import Introduction

log = logging.getLogger("enclave.agent.birthday")

Addr = tuple[str, int]
UdpSocketFactory = Callable[[int], socket.socket]  # address family -> a fresh UDP socket
PunchMessage = Callable[[str, PathAddr, float], bytes | None]  # Node.punch_message
PeerPath = Callable[[str], object]  # Node.peer_addr
SendFromDataSocket = Callable[[bytes, Addr], None]

MAX_HARD_RUNS = 2  # hard runs at once (each holds up to BirthdayLimits.sockets sockets)
TICK = 0.01  # s between pacing steps while sending
POLL = 0.05  # s between checks of the Node's path once everything is sent
DRAIN = 64  # datagrams read per readable event
RECV_SIZE = 65535
FORWARD_BUFFER = 4 << 20  # bytes of send/receive buffer on each forwarder socket
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4)  # the UDP_GRO control message: an int, the segment size


def default_udp_socket(family: int) -> socket.socket:
    return socket.socket(family, socket.SOCK_DGRAM)


@dataclass
class BirthdayResult:
    """One run, for `enclave peers` and the success-rate bench."""

    role: BirthdayRole
    started: float  # monotonic
    outcome: str = "running"  # running | direct | gave-up | skipped
    elapsed: float | None = None  # s from start to won / given up
    probes: int = 0  # easy side: probes sent
    sockets: int = 0  # hard side: sockets opened
    heard: int = 0  # hard side: sockets that received a packet from the peer's address
    path: str | None = None  # "host:port" of the direct path kept

    def to_json(self) -> dict[str, object]:
        return {"role": self.role.value, "outcome": self.outcome, "elapsed": self.elapsed,
                "probes": self.probes, "sockets": self.sockets, "heard": self.heard,
                "path": self.path}


class _Forwarder:
    """A hard-side socket connected to the peer's public address and, once it heard from
    there, a loopback socket connected to the data socket: each one's datagrams leave by the
    other."""

    def __init__(self, loop: asyncio.AbstractEventLoop, outer: socket.socket) -> None:
        self._loop = loop
        self.outer = outer
        self.inner: socket.socket | None = None
        self.addr: PathAddr | None = None  # the inner socket as the data socket sees it
        loop.add_reader(outer.fileno(), self._from_peer)
        self.on_first: Callable[[_Forwarder], bool] = lambda _f: False
        self._gro = False
        self._gso = [False, False]  # may send with UDP_SEGMENT: outer, inner

    def _from_peer(self) -> None:
        packets = _drain(self.outer, self._gro)
        if packets and self.inner is None and not self.on_first(self):
            return  # not followed up: dropped
        if self.inner is not None:
            for data, seg in packets:
                self._gso[1] = _send(self.inner, data, seg, self._gso[1])

    def attach(self, inner: socket.socket) -> None:
        for sock in (self.outer, inner):  # a session's bursts wait here while Python forwards
            grow_socket_buffers(sock, FORWARD_BUFFER)
        # coalesced runs in (UDP_GRO), sent on as one GSO send (UDP_SEGMENT) where the kernel
        # allows: one recv and one send per run of segments instead of per datagram
        self._gro = enable_udp_gro(self.outer) and enable_udp_gro(inner)
        self._gso = [udp_gso_supported(self.outer), udp_gso_supported(inner)]
        self.inner = inner
        host, port = inner.getsockname()[:2]
        self.addr = PathAddr(Transport.UDP, host, port)
        self._loop.add_reader(inner.fileno(), self._to_peer)

    def _to_peer(self) -> None:
        assert self.inner is not None
        for data, seg in _drain(self.inner, self._gro):
            self._gso[0] = _send(self.outer, data, seg, self._gso[0])

    def close(self) -> None:
        for s in (self.outer, self.inner):
            if s is not None and s.fileno() >= 0:
                self._loop.remove_reader(s.fileno())
                s.close()


def _drain(sock: socket.socket, gro: bool) -> list[tuple[bytes, int]]:
    """Up to DRAIN datagrams: (data, segment size of a coalesced run or 0)."""
    out: list[tuple[bytes, int]] = []
    while len(out) < DRAIN:
        try:
            if not gro:
                out.append((sock.recv(RECV_SIZE), 0))
                continue
            data, anc, flags, _addr = sock.recvmsg(RECV_SIZE, _GRO_CMSG_SPACE)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:  # e.g. ECONNREFUSED from an ICMP error on the connected socket
            break
        if flags & socket.MSG_TRUNC:
            continue
        seg = next((int.from_bytes(c[:4], sys.byteorder) for lvl, typ, c in anc
                    if lvl == SOL_UDP and typ == UDP_GRO), 0)
        out.append((data, seg))
    return out


def _send(sock: socket.socket, data: bytes, seg: int, gso: bool) -> bool:
    """Send `data` (a run of `seg`-byte segments when seg > 0) on; whether GSO still works."""
    try:
        if 0 < seg < len(data):
            if gso:
                try:
                    sock.sendmsg([data], [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", seg))])
                    return True
                except OSError as exc:
                    if exc.errno not in (errno.EIO, errno.EINVAL, errno.EOPNOTSUPP):
                        return True  # full buffer, unreachable: lost like on a busy link
                    gso = False  # the kernel or device refuses: one datagram each from now
            for off in range(0, len(data), seg):
                sock.send(data[off:off + seg])
        else:
            sock.send(data)
    except OSError:
        pass
    return gso


@dataclass
class _Run:
    peer: str
    role: BirthdayRole
    target: Addr  # easy: (hard side's public IP, 0); hard: the easy side's public address
    result: BirthdayResult
    prober: EasyProber | None = None
    opener: HardOpener | None = None
    forwarders: list[_Forwarder] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class BirthdayRunner:
    """Birthday runs towards peers (at most one per peer), and the hard side's kept forwarders.

    `local_nat` is this agent's NAT behaviour as discovery classified it (the daemon keeps it
    current); runs start only for a symmetric <-> endpoint-independent pair."""

    def __init__(
        self,
        punch_message: PunchMessage,
        peer_path: PeerPath,
        send: SendFromDataSocket,
        data_sock: socket.socket,
        socket_factory: UdpSocketFactory = default_udp_socket,
        *,
        local_nat: NatBehaviour = NatBehaviour.UNKNOWN,
        limits: BirthdayLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._punch = punch_message
        self._peer_path = peer_path
        self._send = send
        self._data_sock = data_sock
        self._factory = socket_factory
        self.local_nat = local_nat
        self.limits = limits or BirthdayLimits()
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self._runs: dict[str, _Run] = {}
        self._kept: dict[str, list[_Forwarder]] = {}  # a won run's forwarders that heard
        self._results: dict[str, BirthdayResult] = {}

    # ------------------------------------------------------------------ inputs
    def punch_failed(self, peer: str, intro: Introduction) -> None:
        """The ordinary punch to `peer` found no direct path: start a run if the pair fits."""
        if peer in self._runs:
            return
        path = self._peer_path(peer)
        if isinstance(path, PathAddr) and path.transport is Transport.UDP:
            return  # a direct path works (e.g. an earlier run's, after a re-introduction)
        pub = next((c for c in intro.candidates if c.kind is CandidateKind.PUBLIC
                    and c.addr.transport is Transport.UDP and _ipv4(c.addr.host)), None)
        if pub is None:
            return
        peer_nat = intro.nat if intro.nat is not NatBehaviour.UNKNOWN else pub.nat
        role = role_for(self.local_nat, peer_nat)
        if role is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        now = self._clock()
        result = BirthdayResult(role, now)
        self._results[peer] = result
        if role is BirthdayRole.HARD and sum(
                r.role is BirthdayRole.HARD for r in self._runs.values()) >= MAX_HARD_RUNS:
            result.outcome = "skipped"
            return
        self._drop_kept(peer)
        run = _Run(peer, role, (pub.addr.host, pub.addr.port if role is BirthdayRole.HARD
                                else 0), result)
        if role is BirthdayRole.EASY:
            run.prober = EasyProber(now, random.Random(self._rng.getrandbits(64)), self.limits)
        else:
            run.opener = HardOpener(now, self.limits)
        self._runs[peer] = run
        log.info("no direct path to %s: birthday probing as the %s side", peer, role.value)
        self._tick(loop, run)

    def result(self, peer: str) -> BirthdayResult | None:
        return self._results.get(peer)

    def forget(self, peer: str) -> None:
        """The peer is gone: stop its run, close its kept forwarder."""
        run = self._runs.pop(peer, None)
        if run is not None:
            self._close_run(run, keep=False)
        self._drop_kept(peer)
        self._results.pop(peer, None)

    def close(self) -> None:
        for peer in list(self._runs) + list(self._kept):
            self.forget(peer)

    # ------------------------------------------------------------------ the run
    def _tick(self, loop: asyncio.AbstractEventLoop, run: _Run) -> None:
        run.timer = None
        if self._runs.get(run.peer) is not run:
            return
        now = self._clock()
        try:
            self._step(loop, run, now)
        except Exception:  # a bug must not leave sockets open: end the run
            log.exception("birthday run towards %s failed", run.peer)
            self._finish(run, now)
            return
        machine = run.prober if run.prober is not None else run.opener
        assert machine is not None
        if machine.finished(now):
            self._finish(run, now)
            return
        nxt = machine.next_deadline(now)
        delay = POLL if nxt is None else min(max(nxt - now, TICK), POLL)
        run.timer = loop.call_later(delay, self._tick, loop, run)

    def _step(self, loop: asyncio.AbstractEventLoop, run: _Run, now: float) -> None:
        self._check_won(run, now)
        if run.prober is not None:
            host = run.target[0]
            ports = run.prober.due(now)
            # one message per batch, the same bytes to each port (one probe id, so the Node's
            # table of outstanding probes keeps it however many probes follow)
            msg = (self._punch(run.peer, PathAddr(Transport.UDP, host, ports[0]), now)
                   if ports else None)
            if msg is not None:
                for port in ports:
                    self._send(msg, (host, port))
            run.result.probes = run.prober.sent
            return
        opener = run.opener
        assert opener is not None
        count = opener.due(now)
        opener_msg = (self._punch(run.peer, PathAddr(Transport.UDP, *run.target), now)
                      if count else None)
        for _ in range(count):
            if not self._open(loop, run, opener_msg):
                break
        run.result.sockets = len(run.forwarders)
        for index in opener.follow_ups(now):
            addr = run.forwarders[index].addr
            msg = None if addr is None else self._punch(run.peer, addr, now)
            if msg is not None and addr is not None:
                self._send(msg, (addr.host, addr.port))  # out through L_i and socket i

    def _open(self, loop: asyncio.AbstractEventLoop, run: _Run, msg: bytes | None) -> bool:
        """One hard-side socket towards the peer's public address, with a punch message."""
        sock: socket.socket | None = None
        try:
            sock = self._factory(socket.AF_INET)
            sock.setblocking(False)
            sock.bind((self._bind_host(socket.AF_INET), 0))
            sock.connect(run.target)
            if msg is not None:
                with contextlib.suppress(BlockingIOError):
                    sock.send(msg)
        except OSError as exc:  # out of descriptors or ports: fewer mappings this time
            if sock is not None:
                sock.close()
            log.debug("birthday socket towards %s not opened: %s", run.peer, exc)
            return False
        fwd = _Forwarder(loop, sock)
        fwd.on_first = functools.partial(self._heard, run, len(run.forwarders))
        run.forwarders.append(fwd)
        return True

    def _heard(self, run: _Run, index: int, fwd: _Forwarder) -> bool:
        """Socket `index` received from the peer's public address: forward it (True)?"""
        if self._runs.get(run.peer) is not run or run.opener is None:
            return False
        if not run.opener.heard(index, self._clock()):
            return False
        family, host, port = self._loopback_of_data_socket()
        inner: socket.socket | None = None
        try:
            inner = self._factory(family)
            inner.setblocking(False)
            inner.bind((host, 0))
            inner.connect((host, port))
        except OSError:  # out of descriptors, no loopback: this socket is not followed up
            if inner is not None:
                inner.close()
            return False
        fwd.attach(inner)
        run.result.heard += 1
        return True

    def _check_won(self, run: _Run, now: float) -> None:
        path = self._peer_path(run.peer)
        if not isinstance(path, PathAddr) or path.transport is not Transport.UDP:
            return
        if run.prober is not None:
            if path.host == run.target[0]:
                run.prober.won(now)
                run.result.path = f"{path.host}:{path.port}"
                # a roam onto the path is not a confirmation: one probe confirms it (the Node
                # then ranks it as a direct path it has heard answer)
                msg = self._punch(run.peer, path, now)
                if msg is not None:
                    self._send(msg, (path.host, path.port))
            return
        assert run.opener is not None
        for index, fwd in enumerate(run.forwarders):
            if fwd.addr == path:
                run.opener.won(now, index)
                run.result.path = f"{path.host}:{path.port}"
                return
        if path.host == run.target[0]:  # the data socket's own mapping was hit: no forwarder
            run.opener.won(now, None)
            run.result.path = f"{path.host}:{path.port}"

    def _finish(self, run: _Run, now: float) -> None:
        if self._runs.get(run.peer) is run:
            del self._runs[run.peer]
        machine = run.prober if run.prober is not None else run.opener
        won = machine is not None and machine.won_at is not None
        run.result.outcome = "direct" if won else "gave-up"
        run.result.elapsed = round(now - run.result.started, 3)
        self._close_run(run, keep=won)
        log.info("birthday probing towards %s (%s side): %s after %.2f s (%d probes, "
                 "%d sockets)", run.peer, run.role.value, run.result.outcome,
                 run.result.elapsed, run.result.probes, run.result.sockets)

    def _close_run(self, run: _Run, keep: bool) -> None:
        """Close the run's sockets; with `keep`, every forwarder that heard the peer stays
        (at most heard_max): the two sides may have settled on different mappings of the
        run, and traffic on any of them moves the other side over (the Node's roaming)."""
        if run.timer is not None:
            run.timer.cancel()
            run.timer = None
        kept = [f for f in run.forwarders if keep and f.inner is not None]
        for fwd in run.forwarders:
            if fwd not in kept:
                fwd.close()
        if kept:
            self._kept[run.peer] = kept
        run.forwarders.clear()

    def _drop_kept(self, peer: str) -> None:
        for fwd in self._kept.pop(peer, []):
            fwd.close()

    # ------------------------------------------------------------------ addresses
    def _bind_host(self, family: int) -> str:
        """The data socket's own address when it is bound to one of `family`, else any."""
        fam, host, _port = self._loopback_of_data_socket()
        if fam == family and host not in ("127.0.0.1", "::1"):
            return host
        return "0.0.0.0" if family == socket.AF_INET else "::"

    def _loopback_of_data_socket(self) -> tuple[int, str, int]:
        """(family, host, port) where a local socket reaches the data socket: IPv4 loopback
        when it listens on all addresses and takes IPv4 (a lab namespace or host may have IPv6
        switched off, ::1 included), ::1 for an IPv6-only one, else its own address."""
        sock = self._data_sock
        host, port = str(sock.getsockname()[0]), int(sock.getsockname()[1])
        if host.startswith("::ffff:"):
            host = host[len("::ffff:"):]
        if host in ("0.0.0.0", "::"):
            v6only = sock.family == socket.AF_INET6 and bool(
                sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
            return ((socket.AF_INET6, "::1", port) if v6only
                    else (socket.AF_INET, "127.0.0.1", port))
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        return family, host, port


def _ipv4(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 4
    except ValueError:
        return False
