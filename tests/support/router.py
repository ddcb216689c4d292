"""Helpers for the in-memory peer tests: hosts with certificates from a real CA on a simulated
clock (tests.support.pki.Pki(now=T0)) and an in-memory router.

The router (after nebula's e2e/router) moves datagrams between Nodes on a simulated clock:

    node A --datagrams_to_send--> [router: loss / duplication / reorder / NAT rewrite / block]
                                        | delivery at now + latency (+ jitter when reordering)
    node B <--receive_datagram(data, apparent source, now)--+

Each host listens on one or more PathAddrs; `source_for(host, dst)` is the address the far
side sees (a NAT rebinding is simulated by changing it).  No sockets, no real time.
"""

from __future__ import annotations

import datetime as dt
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave.cert import sign as ed_sign
from enclave.cert.keys import public_key_raw
from enclave.discovery import PathAddr, Transport
from enclave.proto.events import Event
from enclave.proto.handshake import LocalCredentials, ValidatePeer
from enclave.proto.node import Node
from enclave.proto.wire import CAP_AES256GCM_HW
from tests.support.pki import Pki

T0 = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


def sim_pki(org: str = "acme") -> Pki:
    """A CA on the simulated clock: T0 until a test assigns pki.now."""
    return Pki(org, now=T0)


def udp(host: str, port: int = 51820) -> PathAddr:
    return PathAddr(Transport.UDP, host, port)


@dataclass
class Host:
    name: str
    node: Node
    addrs: list[PathAddr]
    key: Ed25519PrivateKey
    cert: bytes
    serial: int
    intents: set[str]
    events: list[Event] = field(default_factory=list)
    nat_source: PathAddr | None = None  # what remote hosts see as our source (None: addrs[0])

    @property
    def public_key(self) -> bytes:
        """The certified Ed25519 public key: what a peer needs to MAC its INITs to us."""
        return public_key_raw(self.key.public_key())


def make_host(
    pki: Pki,
    name: str,
    addrs: list[PathAddr],
    *,
    intents: set[str] | None = None,
    aes: bool = True,
    seed: int = 1,
    key_cert: tuple[Ed25519PrivateKey, bytes, int] | None = None,
    validate: ValidatePeer | None = None,
) -> Host:
    """A host with a certificate from `pki`; `validate` checks peers' certificates (default:
    pki.validate)."""
    key, der, serial = key_cert or pki.issue(name)
    wanted: set[str] = set() if intents is None else intents
    creds = LocalCredentials(
        name=name,
        cert_der=der,
        sign=lambda data: ed_sign(key, data),
        caps=CAP_AES256GCM_HW if aes else 0,
        public_key=public_key_raw(key.public_key()),
    )
    rng = random.Random(seed)
    node = Node(
        creds,
        pki.validate if validate is None else validate,
        lambda peer: peer in wanted,
        wall_offset=1.7e9,
        rng=rng,
        random_bytes=lambda n: rng.randbytes(n),
    )
    return Host(name, node, addrs, key, der, serial, wanted)


class Router:
    """Discrete-event datagram router between hosts (simulated time, deterministic)."""

    def __init__(self, *, latency: float = 0.005, seed: int = 7) -> None:
        self.now = 100.0
        self.latency = latency
        self.rng = random.Random(seed)
        self.hosts: dict[str, Host] = {}
        self._by_addr: dict[PathAddr, Host] = {}
        self._queue: list[tuple[float, int, bytes, PathAddr, PathAddr]] = []
        self._seq = 0
        self.loss = 0.0
        self.duplicate = 0.0
        self.reorder = 0.0
        self.blocked: set[tuple[str, PathAddr]] = set()  # (sender name, destination) dropped
        self.drop_filter: Callable[[bytes, str, PathAddr], bool] | None = None
        self.log: list[tuple[float, str, PathAddr, bytes]] = []  # (time, sender, dst, data)
        self._spins = 0

    def add(self, host: Host) -> Host:
        self.hosts[host.name] = host
        for a in host.addrs:
            self._by_addr[a] = host
        return host

    def add_addr(self, host: Host, addr: PathAddr) -> None:
        host.addrs.append(addr)
        self._by_addr[addr] = host

    def source_for(self, host: Host, dst: PathAddr) -> PathAddr:
        # through a relay the far side sees our relay channel; an IPv6 peer our IPv6 address; a
        # LAN peer (same /24) our LAN address; everyone else our NAT's public address
        if dst.transport is Transport.RELAY:
            return next(a for a in host.addrs if a.transport is Transport.RELAY)
        if ":" in dst.host:  # to IPv6: from the host's own IPv6 address, where it has one
            v6 = next((a for a in host.addrs if ":" in a.host), None)
            if v6 is not None:
                return v6
        for a in host.addrs:
            if a.host.rsplit(".", 1)[0] == dst.host.rsplit(".", 1)[0]:
                return a
        return host.nat_source or host.addrs[0]

    def inject(self, data: bytes, src: PathAddr, dst: PathAddr, delay: float = 0.0) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay, self._seq, data, src, dst))

    def _collect(self) -> None:
        for h in self.hosts.values():
            for data, dst in h.node.datagrams_to_send(self.now):
                assert isinstance(dst, PathAddr)
                self.log.append((self.now, h.name, dst, data))
                if (h.name, dst) in self.blocked:
                    continue
                if self.drop_filter is not None and self.drop_filter(data, h.name, dst):
                    continue
                if self.loss and self.rng.random() < self.loss:
                    continue
                copies = 2 if self.duplicate and self.rng.random() < self.duplicate else 1
                for _ in range(copies):
                    delay = self.latency
                    if self.reorder and self.rng.random() < self.reorder:
                        delay += self.rng.uniform(0, 4 * self.latency)
                    self.inject(data, self.source_for(h, dst), dst, delay)
            while (ev := h.node.next_event()) is not None:
                h.events.append(ev)

    def step(self, until: float) -> bool:
        """Advance to the next packet or timer (not past `until`); False when idle."""
        self._collect()
        times = [t for h in self.hosts.values() if (t := h.node.get_timer()) is not None]
        if self._queue:
            times.append(self._queue[0][0])
        if not times or min(times) > until:
            self.now = until
            return False
        nxt = max(self.now, min(times))
        self._spins = self._spins + 1 if nxt == self.now else 0
        assert self._spins < 1000, "a timer stays due without progress (get_timer livelock)"
        self.now = nxt
        while self._queue and self._queue[0][0] <= self.now:
            _t, _s, data, src, dst = heapq.heappop(self._queue)
            host = self._by_addr.get(dst)
            if host is not None:
                host.node.receive_datagram(data, src, self.now)
        for h in self.hosts.values():
            t = h.node.get_timer()
            if t is not None and t <= self.now:
                h.node.handle_timer(self.now)
        self._collect()
        return True

    def run(self, duration: float, *, until_idle: bool = False) -> None:
        end = self.now + duration
        while self.now < end:
            if not self.step(end) and until_idle:
                break
        self._collect()

    def run_until(self, pred: Callable[[], bool], timeout: float) -> bool:
        end = self.now + timeout
        while not pred():
            if self.now >= end:
                return False
            self.step(end)
        return True


def events_of(host: Host, kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in host.events if isinstance(e, kind)]
