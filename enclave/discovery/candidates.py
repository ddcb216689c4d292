"""Candidate addresses of a peer and how paths through them rank.

A candidate is an address at which the peer may be reachable, as the platform's discovery
service reports it (the peer's own private addresses, its public address as reflected by the
service, a TCP listener, a relay) or as learnt from an authenticated packet (peer-reflexive).

Path rank, best first (lower is better):

    0  same LAN      UDP to a private candidate
    1  direct UDP    UDP to a public / peer-reflexive candidate
    2  direct TCP    TCP to any candidate
    3  relay-udp     through the platform's UDP relay
    4  relay-tls     through the platform's relay over TLS (a WebSocket on its HTTPS port)

IPv6: an agent's own global IPv6 address (anything outside fc00::/7 unique-local, fe80::/10
link-local and fec0::/10 site-local) is a PUBLIC candidate with mapping NONE, as a reflected
address would be (interface_kind): a peer anywhere can punch it -- through a stateful IPv6
firewall as through a port-restricted NAT. A unique-local address is PRIVATE (same site only);
behind NAT66 the reflected IPv6 mapping is the PUBLIC one.

Choosing among confirmed paths (choose_path), in order:

    1. the lowest rank: LAN, then direct UDP, direct TCP, relay-udp, relay-tls -- a direct
       path always beats a relayed one, whatever the RTTs;
    2. within that rank, the lowest RTT, where RTTs within RTT_SLACK_S or RTT_SLACK_FRACTION of
       the lowest count as equal (measurement noise must not flip paths);
    3. among equals, IPv6 before IPv4 (no NAT mapping to keep alive; RFC 8305's preference);
    4. then the lower RTT, then the earliest confirmed.

A dual-stack pair whose IPv4 can only be relayed (both NATs symmetric) therefore runs direct
over IPv6, and one with both families direct runs over the faster of the two.

Candidate hosts are IP address literals, never names (check_candidate_host): nothing that comes
from a peer or the platform can make an agent resolve a name, and nothing aims an agent's probes
at addresses no peer can hold (loopback unless allowed, unspecified, multicast, broadcast,
reserved, link-local, IPv4-mapped, scoped).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import NamedTuple


class Transport(StrEnum):
    UDP = "udp"
    TCP = "tcp"
    RELAY = "relay"  # the platform's UDP relay
    RELAY_TLS = "relay-tls"  # the platform's relay over TLS (enclave.agent.relay_tls)


class PathAddr(NamedTuple):
    """Where a datagram goes: the I/O layer maps this to a socket / stream / relay channel."""

    transport: Transport
    host: str
    port: int


class CandidateKind(IntEnum):
    PRIVATE = 0  # an address on the peer's own LAN (RFC 1918 / ULA / the lab's site LANs)
    # the peer's address as the discovery service saw it (server-reflexive), or a port mapping
    # its router granted (PCP / NAT-PMP / UPnP-IGD: enclave.agent.portmap; nat NONE, since the
    # router forwards whatever reaches it, so it is punchable from behind any NAT)
    PUBLIC = 1
    PEER_REFLEXIVE = 2  # learnt from an authenticated packet that came from this address
    RELAY = 3  # the platform relay


class NatBehaviour(StrEnum):
    """Mapping behaviour of the NAT in front of the candidate (RFC 4787 terms)."""

    NONE = "none"  # no NAT (public address on the host)
    ENDPOINT_INDEPENDENT = "endpoint-independent"  # "cone": one mapping for every destination
    ADDRESS_DEPENDENT = "address-dependent"
    SYMMETRIC = "address-and-port-dependent"  # new mapping per destination: punching rarely works
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Candidate:
    addr: PathAddr
    kind: CandidateKind
    nat: NatBehaviour = NatBehaviour.UNKNOWN


_NOT_GLOBAL6 = (
    ipaddress.IPv6Network("fc00::/7"),  # unique-local (RFC 4193)
    ipaddress.IPv6Network("fe80::/10"),  # link-local
    ipaddress.IPv6Network("fec0::/10"),  # site-local (deprecated, RFC 3879)
)


def interface_kind(host: str) -> CandidateKind:
    """The kind of a candidate made of one of the agent's own interface addresses: PUBLIC for a
    global IPv6 address (reachable from anywhere its firewall lets through), else PRIVATE."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return CandidateKind.PRIVATE
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None and not (
        ip.is_loopback or ip.is_multicast or ip.is_unspecified
        or any(ip in net for net in _NOT_GLOBAL6)
    ):
        return CandidateKind.PUBLIC
    return CandidateKind.PRIVATE


RANK_LAN = 0
RANK_DIRECT_UDP = 1
RANK_DIRECT_TCP = 2
RANK_RELAY = 3  # the UDP relay; every rank from here on is relayed
RANK_RELAY_TLS = 4
RELAYED = frozenset({Transport.RELAY, Transport.RELAY_TLS})


def path_rank(candidate: Candidate) -> int:
    if candidate.addr.transport is Transport.RELAY_TLS:
        return RANK_RELAY_TLS
    if candidate.addr.transport is Transport.RELAY or candidate.kind is CandidateKind.RELAY:
        return RANK_RELAY
    if candidate.addr.transport is Transport.TCP:
        return RANK_DIRECT_TCP
    if candidate.kind is CandidateKind.PRIVATE:
        return RANK_LAN
    return RANK_DIRECT_UDP


def punchable(candidate: Candidate, local_nat: NatBehaviour) -> bool:
    """Whether probing this candidate directly can work at all.

    Two address-and-port-dependent NATs never meet (each side's mapping towards the other is
    unknown in advance); a relay is never punched.
    """
    if path_rank(candidate) >= RANK_RELAY:
        return False
    if candidate.kind is CandidateKind.PRIVATE:
        return True
    return not (
        candidate.nat is NatBehaviour.SYMMETRIC and local_nat is NatBehaviour.SYMMETRIC
    )


IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def check_candidate_host(host: str, *, loopback: bool = False) -> str:
    """The canonical text of `host` if it may be a candidate address; ValueError saying why not.

    Only IP literals pass (a name is refused, never resolved). Refused: unspecified, multicast,
    broadcast and other reserved ranges, link-local (only meaningful with an interface scope,
    which a candidate cannot carry), IPv4-mapped IPv6, scoped IPv6, and loopback unless
    `loopback` (both ends on one host).
    """
    if not isinstance(host, str) or not 0 < len(host) <= 45:
        raise ValueError("candidate host is not an IP address literal")
    try:
        ip: IpAddress = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("candidate host is not an IP address literal") from None
    if isinstance(ip, ipaddress.IPv6Address) and (ip.scope_id or ip.ipv4_mapped is not None):
        raise ValueError("scoped or IPv4-mapped IPv6 candidate")
    if ip.is_unspecified or ip.is_multicast or ip.is_link_local:
        raise ValueError("unspecified, multicast or link-local candidate")
    if ip.is_loopback:
        if not loopback:
            raise ValueError("loopback candidate")
    elif ip.is_reserved:
        raise ValueError("reserved or broadcast candidate")
    return str(ip)


def candidate_allowed(candidate: Candidate, *, loopback: bool = False) -> bool:
    """Whether `candidate`'s host passes check_candidate_host."""
    try:
        check_candidate_host(candidate.addr.host, loopback=loopback)
    except ValueError:
        return False
    return True


RTT_SLACK_S = 0.005  # RTTs this close (seconds) to the lowest count as equal ...
RTT_SLACK_FRACTION = 0.2  # ... or this close relative to it, whichever is larger


@dataclass(frozen=True)
class PathChoice:
    """One confirmed path as choose_path weighs it."""

    addr: PathAddr
    rank: int  # path_rank of its candidate
    rtt: float | None  # smoothed RTT of authenticated probes over it (seconds), None: unknown
    confirmed_at: float


def _is_v6(addr: PathAddr) -> bool:
    return addr.transport in (Transport.UDP, Transport.TCP) and ":" in addr.host


def worth_moving(cur: PathChoice, new: PathChoice) -> bool:
    """Whether `new` (choose_path's pick) replaces the confirmed current path `cur` of the same
    rank. With hysteresis, so that paths within the slack do not flap on jitter: a lower RTT
    counts only beyond the slack; IPv6 replaces IPv4 when its RTT is within the slack."""
    v6_over_v4 = _is_v6(new.addr) and not _is_v6(cur.addr)
    if cur.rtt is None or new.rtt is None:
        return v6_over_v4
    slack = max(RTT_SLACK_S, min(cur.rtt, new.rtt) * RTT_SLACK_FRACTION)
    return new.rtt + slack < cur.rtt or (v6_over_v4 and new.rtt <= cur.rtt + slack)


def choose_path(paths: Sequence[PathChoice]) -> PathAddr | None:
    """The path to use among confirmed ones (the rule in the module docstring), None if none."""
    if not paths:
        return None
    rank = min(p.rank for p in paths)
    pool = [p for p in paths if p.rank == rank]
    known = [p.rtt for p in pool if p.rtt is not None]
    if known:
        floor = min(known)
        slack = max(RTT_SLACK_S, floor * RTT_SLACK_FRACTION)
        pool = [p for p in pool if p.rtt is not None and p.rtt <= floor + slack]
    best = min(pool, key=lambda p: (not _is_v6(p.addr),
                                    p.rtt if p.rtt is not None else float("inf"),
                                    p.confirmed_at))
    return best.addr
