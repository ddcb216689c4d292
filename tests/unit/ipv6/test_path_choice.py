"""Which confirmed path a peer uses (candidates.choose_path, PathManager.best) and which kind an
own IPv6 address is as a candidate (candidates.interface_kind, agent DiscoveryState)."""

from __future__ import annotations

import random

import pytest

from enclave.agent.discovery import DiscoveryState
from enclave.discovery.candidates import (
    RANK_DIRECT_TCP,
    RANK_DIRECT_UDP,
    RANK_LAN,
    RANK_RELAY,
    RTT_SLACK_S,
    Candidate,
    CandidateKind,
    NatBehaviour,
    PathAddr,
    PathChoice,
    Transport,
    choose_path,
    interface_kind,
)
from enclave.discovery.paths import PathManager

V4 = PathAddr(Transport.UDP, "198.18.2.1", 40000)
V6 = PathAddr(Transport.UDP, "2001:db8:2:2::11", 51820)
RELAY = PathAddr(Transport.RELAY, "198.18.0.11", 7)
TCP = PathAddr(Transport.TCP, "198.18.2.1", 51820)
LAN = PathAddr(Transport.UDP, "198.19.1.12", 51820)


def choice(addr: PathAddr, rank: int, rtt: float | None, at: float = 0.0) -> PathChoice:
    return PathChoice(addr, rank, rtt, at)


def test_nothing_confirmed() -> None:
    assert choose_path([]) is None


def test_direct_beats_relayed_whatever_the_rtt() -> None:
    assert choose_path([choice(RELAY, RANK_RELAY, 0.001),
                        choice(V6, RANK_DIRECT_UDP, 0.200)]) == V6
    assert choose_path([choice(RELAY, RANK_RELAY, 0.001),
                        choice(TCP, RANK_DIRECT_TCP, 0.300)]) == TCP


def test_lan_before_internet_paths() -> None:
    assert choose_path([choice(V6, RANK_DIRECT_UDP, 0.0001),
                        choice(LAN, RANK_LAN, 0.002)]) == LAN


def test_equal_rtts_prefer_ipv6() -> None:
    """IPv4 a little faster, within the slack: IPv6 (no NAT mapping to keep open)."""
    assert choose_path([choice(V4, RANK_DIRECT_UDP, 0.010),
                        choice(V6, RANK_DIRECT_UDP, 0.010 + RTT_SLACK_S * 0.9)]) == V6
    # relative slack: 20 % of 100 ms
    assert choose_path([choice(V4, RANK_DIRECT_UDP, 0.100),
                        choice(V6, RANK_DIRECT_UDP, 0.115)]) == V6


def test_clearly_lower_rtt_wins_either_family() -> None:
    assert choose_path([choice(V4, RANK_DIRECT_UDP, 0.010),
                        choice(V6, RANK_DIRECT_UDP, 0.040)]) == V4
    assert choose_path([choice(V4, RANK_DIRECT_UDP, 0.040),
                        choice(V6, RANK_DIRECT_UDP, 0.010)]) == V6


def test_a_measured_path_beats_an_unmeasured_one_then_earliest() -> None:
    assert choose_path([choice(V6, RANK_DIRECT_UDP, None),
                        choice(V4, RANK_DIRECT_UDP, 0.050)]) == V4
    v4b = PathAddr(Transport.UDP, "198.18.3.1", 1)
    assert choose_path([choice(v4b, RANK_DIRECT_UDP, None, at=2.0),
                        choice(V4, RANK_DIRECT_UDP, None, at=1.0)]) == V4


def test_path_manager_uses_the_rule() -> None:
    """Both families punched and confirmed with close RTTs (IPv4 the faster by a hair): the
    session runs over IPv6. The old rule (lowest RTT outright) picked IPv4."""
    cands = [Candidate(V4, CandidateKind.PUBLIC, NatBehaviour.ENDPOINT_INDEPENDENT),
             Candidate(V6, CandidateKind.PUBLIC, NatBehaviour.NONE)]
    pm = PathManager(cands, 0.0, random.Random(1))
    pm.confirm(V4, 1.0, rtt=0.0010)
    pm.confirm(V6, 1.0, rtt=0.0012)
    assert pm.best() == V6
    pm.confirm(V6, 2.0, rtt=0.5)  # IPv6 turned slow (smoothed: 0.126 s): IPv4
    assert pm.best() == V4


@pytest.mark.parametrize(("host", "kind"), [
    ("2001:db8:2:1::11", CandidateKind.PUBLIC),
    ("2a00:1450::1", CandidateKind.PUBLIC),
    ("fd00:0:0:3::11", CandidateKind.PRIVATE),
    ("fe80::1", CandidateKind.PRIVATE),
    ("fec0::1", CandidateKind.PRIVATE),
    ("::ffff:198.18.1.1", CandidateKind.PRIVATE),
    ("198.19.1.11", CandidateKind.PRIVATE),
    ("nonsense", CandidateKind.PRIVATE),
])
def test_interface_kind(host: str, kind: CandidateKind) -> None:
    assert interface_kind(host) is kind


def test_discovery_candidates_of_a_dual_stack_host() -> None:
    """Global IPv6: PUBLIC with no NAT (UDP and the TCP data port); ULA: PRIVATE; the other
    family's reflected mapping a PUBLIC candidate with its own NAT class."""
    st = DiscoveryState(
        private=["198.19.1.11", "2001:db8:2:1::11", "fd00:0:0:1::11"],
        udp=[("198.18.1.1", 40000), ("198.18.1.1", 40001)],
        tcp=("198.18.1.1", 51820),
        nat=NatBehaviour.SYMMETRIC,
        udp_alt=[("2001:db8:1:1::1", 51820), ("2001:db8:1:1::1", 51820)],
        nat_alt=NatBehaviour.ENDPOINT_INDEPENDENT,
    )
    got = {(c.addr.transport, c.addr.host): (c.kind, c.nat) for c in st.candidates(51820, 51820)}
    U, T = Transport.UDP, Transport.TCP
    assert got == {
        (U, "198.19.1.11"): (CandidateKind.PRIVATE, NatBehaviour.SYMMETRIC),
        (T, "198.19.1.11"): (CandidateKind.PRIVATE, NatBehaviour.SYMMETRIC),
        (U, "2001:db8:2:1::11"): (CandidateKind.PUBLIC, NatBehaviour.NONE),
        (T, "2001:db8:2:1::11"): (CandidateKind.PUBLIC, NatBehaviour.NONE),
        (U, "fd00:0:0:1::11"): (CandidateKind.PRIVATE, NatBehaviour.SYMMETRIC),
        (T, "fd00:0:0:1::11"): (CandidateKind.PRIVATE, NatBehaviour.SYMMETRIC),
        (U, "198.18.1.1"): (CandidateKind.PUBLIC, NatBehaviour.SYMMETRIC),
        (T, "198.18.1.1"): (CandidateKind.PUBLIC, NatBehaviour.SYMMETRIC),
        (U, "2001:db8:1:1::1"): (CandidateKind.PUBLIC, NatBehaviour.ENDPOINT_INDEPENDENT),
    }
    assert st.mappings_json()["udp_alt"] == ["[2001:db8:1:1::1]:51820"] * 2
