"""Candidate addresses of a peer and how paths through them rank.

A candidate is an address at which the peer may be reachable, as the platform's discovery
service reports it (the peer's own private addresses, its public address as reflected by the
service, a TCP listener, a relay) or as learnt from an authenticated packet (peer-reflexive).

Path rank, best first (lower is better):

    0  same LAN      UDP to a private candidate
    1  direct UDP    UDP to a public / peer-reflexive candidate
    2  direct TCP    TCP to any candidate
    3  relay         through the platform's relay
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import NamedTuple


class Transport(StrEnum):
    UDP = "udp"
    TCP = "tcp"
    RELAY = "relay"


class PathAddr(NamedTuple):
    """Where a datagram goes: the I/O layer maps this to a socket / stream / relay channel."""

    transport: Transport
    host: str
    port: int


class CandidateKind(IntEnum):
    PRIVATE = 0  # an address on the peer's own LAN (RFC 1918 / ULA / the lab's site LANs)
    PUBLIC = 1  # the peer's address as the discovery service saw it (server-reflexive)
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


RANK_LAN = 0
RANK_DIRECT_UDP = 1
RANK_DIRECT_TCP = 2
RANK_RELAY = 3


def path_rank(candidate: Candidate) -> int:
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
    if path_rank(candidate) == RANK_RELAY:
        return False
    if candidate.kind is CandidateKind.PRIVATE:
        return True
    return not (
        candidate.nat is NatBehaviour.SYMMETRIC and local_nat is NatBehaviour.SYMMETRIC
    )
