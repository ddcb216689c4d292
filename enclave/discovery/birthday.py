"""Birthday probing: a direct path between a symmetric NAT and a port-restricted one — sans-I/O.

The ordinary punch cannot meet these two: the hard side's NAT (symmetric: a fresh random public
port per destination) shows the easy side a port nobody could predict, and the easy side's NAT
(endpoint-independent mapping, address-and-port-dependent filtering) lets in only the exact
address and port it has sent to.  Birthday probing makes the guess cheap:

    hard side (symmetric)                                   easy side (port-restricted)
    opens `sockets` (256) UDP sockets, each sends one        sends from its one data socket
    punch message to the easy side's public address Pa:pa    (public Pa:pa for every destination)
    -> its NAT holds 256 mappings Pb:q1..q256, each          punch messages to `probes` (2048)
       letting in packets from Pa:pa only                    distinct random ports of Pb

    a probe to Pb:q_i reaches hard socket i (the mapping exists and it comes from Pa:pa); the
    easy side's NAT now lets Pb:q_i in (it sent there), so the answer gets back: both keep the
    pair (easy data socket <-> hard socket i), the session moves onto it.

    P(success) = 1 - C(R - n, k) / C(R, k)  ~=  1 - (1 - n/R)^k
    R = 64512 ports (1024-65535), n = 256, k = 2048:  99.975 % (approximation: 99.971 %)
    (50 % after 175 probes, 95 % after 750, 99 % after 1148, 99.9 % after 1715)

Bounds (BirthdayLimits): the hard side opens at most `sockets` sockets at `open_rate` per
second, one packet each; the easy side sends at most `probes` packets at `probe_rate` per second
(1000/s: the 2048 take ~2 s); everything stops `duration` seconds after the start, won or not
(the relay carries the session then).  At most `heard_max` hard sockets that received something
are followed up (the peer's traffic can only come from Pa:pa; the Node authenticates it).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import StrEnum

from enclave.discovery.candidates import NatBehaviour

PORT_LOW, PORT_HIGH = 1024, 65535  # what Linux (and most NATs) hand out for a source >= 1024


class BirthdayRole(StrEnum):
    HARD = "hard"  # behind the symmetric NAT: many sockets
    EASY = "easy"  # behind the endpoint-independent (port-restricted) NAT: many probes


@dataclass(frozen=True)
class BirthdayLimits:
    sockets: int = 256  # hard side: sockets (NAT mappings) opened
    probes: int = 2048  # easy side: probes sent, to distinct random ports
    probe_rate: float = 1000.0  # easy side: probes per second
    open_rate: float = 2000.0  # hard side: sockets opened (one packet each) per second
    easy_delay: float = 0.15  # easy side starts this much later: the mappings exist by then
    duration: float = 3.0  # both sides give up this long after the start
    heard_max: int = 4  # hard sockets that heard something and are followed up
    heard_interval: float = 0.1  # hard side: punch message through each such socket this often
    max_batch: int = 64  # packets or sockets in one due() call, however late the caller is
    ports: tuple[int, int] = (PORT_LOW, PORT_HIGH)


def role_for(local_nat: NatBehaviour, peer_nat: NatBehaviour) -> BirthdayRole | None:
    """Our side in a birthday run with a peer behind `peer_nat`, or None (not this pair)."""
    if local_nat is NatBehaviour.SYMMETRIC and peer_nat is NatBehaviour.ENDPOINT_INDEPENDENT:
        return BirthdayRole.HARD
    if local_nat is NatBehaviour.ENDPOINT_INDEPENDENT and peer_nat is NatBehaviour.SYMMETRIC:
        return BirthdayRole.EASY
    return None


def success_probability(n: int, k: int, r: int = PORT_HIGH - PORT_LOW + 1) -> float:
    """P(at least one of k distinct random probe ports hits one of n mapped ports among r)."""
    if n <= 0 or k <= 0:
        return 0.0
    if n + k > r:
        return 1.0
    # C(r-n, k) / C(r, k) = prod_{j<k} (r-n-j)/(r-j), in logs
    miss = sum(math.log1p(-n / (r - j)) for j in range(k))
    return 1.0 - math.exp(miss)


class _Paced:
    """`total` events at `rate` per second from `start`, at most `batch` per due() call."""

    def __init__(self, start: float, total: int, rate: float, batch: int) -> None:
        self.start, self.total, self.rate, self.batch = start, total, rate, batch
        self.done = 0

    def take(self, now: float) -> int:
        if now < self.start or self.done >= self.total:
            return 0
        allowed = min(self.total, int((now - self.start) * self.rate) + 1)
        n = max(0, min(allowed - self.done, self.batch))
        self.done += n
        return n

    def next_at(self, now: float) -> float | None:
        if self.done >= self.total:
            return None
        return max(now, self.start + self.done / self.rate)


class EasyProber:
    """The easy side's run: which ports of the hard side's public address to probe, when."""

    def __init__(self, start: float, rng: random.Random,
                 limits: BirthdayLimits = BirthdayLimits()) -> None:
        lo, hi = limits.ports
        self.limits = limits
        self.start = start
        self.end = start + limits.duration
        self._ports = rng.sample(range(lo, hi + 1), min(limits.probes, hi - lo + 1))
        self._pace = _Paced(start + limits.easy_delay, len(self._ports), limits.probe_rate,
                            limits.max_batch)
        self.won_at: float | None = None

    @property
    def sent(self) -> int:
        return self._pace.done

    def due(self, now: float) -> list[int]:
        """Ports to probe now (none once won or over)."""
        if self.finished(now):
            return []
        before = self._pace.done
        return self._ports[before:before + self._pace.take(now)]

    def won(self, now: float) -> None:
        """A direct path to the hard side works: stop probing."""
        if self.won_at is None:
            self.won_at = now

    def finished(self, now: float) -> bool:
        return self.won_at is not None or now >= self.end

    def next_deadline(self, now: float) -> float | None:
        if self.finished(now):
            return None
        nxt = self._pace.next_at(now)
        return self.end if nxt is None else min(nxt, self.end)


class HardOpener:
    """The hard side's run: how many sockets to open when, which ones heard the peer."""

    def __init__(self, start: float, limits: BirthdayLimits = BirthdayLimits()) -> None:
        self.limits = limits
        self.start = start
        self.end = start + limits.duration
        self._pace = _Paced(start, limits.sockets, limits.open_rate, limits.max_batch)
        self._heard: dict[int, float] = {}  # socket index -> next follow-up time
        self.won_at: float | None = None
        self.winner: int | None = None

    @property
    def opened(self) -> int:
        return self._pace.done

    def heard_sockets(self) -> list[int]:
        return list(self._heard)

    def due(self, now: float) -> int:
        """How many more sockets to open (each sends one punch message) now."""
        return 0 if self.finished(now) else self._pace.take(now)

    def heard(self, index: int, now: float) -> bool:
        """Socket `index` received a packet (from the peer's public address): follow it up?
        True for the first `heard_max` sockets (and again for one already followed)."""
        if index in self._heard:
            return True
        if self.finished(now) or len(self._heard) >= self.limits.heard_max:
            return False
        self._heard[index] = now
        return True

    def follow_ups(self, now: float) -> list[int]:
        """Heard sockets through which to send our punch message now."""
        if self.finished(now):
            return []
        out = [i for i, t in self._heard.items() if now >= t]
        for i in out:
            self._heard[i] = now + self.limits.heard_interval
        return out

    def won(self, now: float, index: int | None) -> None:
        """The session runs directly: over socket `index` (None: over the data socket)."""
        if self.won_at is None:
            self.won_at, self.winner = now, index

    def finished(self, now: float) -> bool:
        return self.won_at is not None or now >= self.end

    def next_deadline(self, now: float) -> float | None:
        if self.finished(now):
            return None
        times = [t for t in (self._pace.next_at(now), *self._heard.values()) if t is not None]
        return min([*times, self.end])
