"""Hole punching through the in-memory router: path choice, moving to a better path, relay."""

from __future__ import annotations

from enclave.discovery import Candidate, CandidateKind, PathAddr, Transport
from enclave.discovery.candidates import RANK_DIRECT_UDP, RANK_LAN
from enclave.proto.events import PathChanged, SessionClosed, SessionEstablished, UseRelay
from tests.support.router import Host, Router, events_of, make_host, sim_pki, udp

A, B = "AAAAA", "BBBBB"
LAN_A, LAN_B = udp("198.19.1.10"), udp("198.19.2.20")
PUB_A, PUB_B = udp("198.18.1.1"), udp("198.18.2.2")


def cands(lan: PathAddr, pub: PathAddr) -> list[Candidate]:
    return [Candidate(pub, CandidateKind.PUBLIC), Candidate(lan, CandidateKind.PRIVATE)]


def two_sites(*, same_lan: bool) -> tuple[Router, Host, Host]:
    pki = sim_pki()
    r = Router()
    lan_b = udp("198.19.1.20") if same_lan else LAN_B
    a = r.add(make_host(pki, A, [LAN_A, PUB_A], intents={B}, seed=1))
    b = r.add(make_host(pki, B, [lan_b, PUB_B], intents={A}, seed=2))
    a.nat_source, b.nat_source = PUB_A, PUB_B
    if not same_lan:  # the other site's LAN is unreachable
        r.blocked |= {(A, LAN_B), (B, LAN_A)}
    at = r.now + 1.0
    a.node.connect(B, cands(lan_b, PUB_B), r.now, punch_at=at, peer_key=b.public_key)
    b.node.connect(A, cands(LAN_A, PUB_A), r.now, punch_at=at, peer_key=a.public_key)
    return r, a, b


def test_different_sites_use_the_public_path() -> None:
    r, a, b = two_sites(same_lan=False)
    assert r.run_until(lambda: a.node.session(B) is not None and b.node.session(A) is not None, 7)
    r.run(10)
    assert a.node.peer_addr(B) == PUB_B and b.node.peer_addr(A) == PUB_A
    assert events_of(a, UseRelay) == []


def test_same_lan_wins_over_public() -> None:
    r, a, b = two_sites(same_lan=True)
    assert r.run_until(lambda: a.node.session(B) is not None and b.node.session(A) is not None, 7)
    r.run(10)
    assert a.node.peer_addr(B) == udp("198.19.1.20")
    assert b.node.peer_addr(A) == LAN_A
    assert len(events_of(a, SessionEstablished)) == 1


def test_move_to_better_path_without_dropping_the_session() -> None:
    r, a, b = two_sites(same_lan=True)
    # the LAN path is blocked at first: the session comes up on the public path
    lan_b = udp("198.19.1.20")
    r.blocked |= {(A, lan_b), (B, LAN_A)}
    assert r.run_until(lambda: a.node.session(B) is not None and b.node.session(A) is not None, 7)
    assert a.node.peer_addr(B) == PUB_B
    r.run(8)
    r.blocked -= {(A, lan_b), (B, LAN_A)}
    got: list[bytes] = []
    for i in range(400):  # 40 s of traffic while the re-probe finds the LAN path
        a.node.send_data(B, b"%d" % i, r.now)
        r.run(0.1)
    from enclave.proto.events import DataReceived

    got = [e.frame for e in events_of(b, DataReceived)]
    assert got == [b"%d" % i for i in range(400)]
    # whichever side's re-probe found the LAN path first moved (PathChanged); the other
    # followed when the first authenticated packet arrived over it (PeerRoamed)
    moves = [e for h in (a, b) for e in events_of(h, PathChanged)]
    assert moves and all(m.rank == RANK_LAN for m in moves)
    assert a.node.peer_addr(B) == lan_b and b.node.peer_addr(A) == LAN_A
    assert events_of(a, SessionClosed) == []


def test_no_direct_path_gives_up_after_5s_then_relay_then_direct_later() -> None:
    r, a, b = two_sites(same_lan=False)
    r.blocked |= {(A, PUB_B), (B, PUB_A)}  # symmetric-ish: nothing direct gets through
    start = r.now + 1.0
    assert r.run_until(lambda: bool(events_of(a, UseRelay)), 10)
    assert 4.5 <= r.now - start <= 6.0
    # the agent adds a relay candidate; the relay forwards to B
    relay = PathAddr(Transport.RELAY, "198.18.9.9", 2)  # relay channel towards B
    r.add_addr(b, relay)
    r.add_addr(a, PathAddr(Transport.RELAY, "198.18.9.9", 1))  # and towards A
    a.node.add_candidate(B, Candidate(relay, CandidateKind.RELAY), r.now)
    assert r.run_until(lambda: a.node.session(B) is not None, 20)
    assert a.node.peer_addr(B) == relay
    # direct UDP opens up later: a re-probe burst finds it and the session moves over
    r.blocked -= {(A, PUB_B), (B, PUB_A)}
    assert r.run_until(lambda: a.node.peer_addr(B) == PUB_B, 40)
    moves = [e for h in (a, b) for e in events_of(h, PathChanged)]
    assert moves and moves[-1].rank == RANK_DIRECT_UDP
    assert b.node.peer_addr(A) == PUB_A
    assert events_of(a, SessionClosed) == []


def test_dual_stack_pair_moves_to_ipv6_of_equal_rank_when_it_answers_later() -> None:
    """IPv4 answers first, IPv6 a little later in the same punch: the session moves to IPv6
    (candidates.choose_path: the same rank, RTTs within slack, IPv6 first) instead of staying
    where it came up (the netlab dual-stack pair that did, when its IPv4 probe won the race)."""
    pki = sim_pki()
    r = Router()
    pub6_a, pub6_b = udp("2001:db8:1::10"), udp("2001:db8:2::20")
    a = r.add(make_host(pki, A, [PUB_A, pub6_a], intents={B}, seed=1))
    b = r.add(make_host(pki, B, [PUB_B, pub6_b], intents={A}, seed=2))
    r.blocked |= {(A, pub6_b), (B, pub6_a)}  # IPv6 closed at first
    at = r.now + 1.0
    for me, peer, pub, pub6 in ((a, b, PUB_B, pub6_b), (b, a, PUB_A, pub6_a)):
        me.node.connect(peer.name, [Candidate(pub6, CandidateKind.PUBLIC),
                                    Candidate(pub, CandidateKind.PUBLIC)],
                        r.now, punch_at=at, peer_key=peer.public_key)
    assert r.run_until(lambda: a.node.session(B) is not None and b.node.session(A) is not None, 7)
    assert a.node.peer_addr(B) == PUB_B and b.node.peer_addr(A) == PUB_A
    r.blocked -= {(A, pub6_b), (B, pub6_a)}  # the punch's later rounds reach IPv6 too
    assert r.run_until(lambda: a.node.peer_addr(B) == pub6_b and b.node.peer_addr(A) == pub6_a,
                       40)
    moves = [e for h in (a, b) for e in events_of(h, PathChanged)]
    assert moves and all(m.rank == RANK_DIRECT_UDP for m in moves)
    assert events_of(a, SessionClosed) == [] and events_of(b, SessionClosed) == []
