"""Relay first and fallback with two real Nodes on the in-memory router (simulated clock).

    A 198.18.1.1 <---- direct UDP (blocked / open as the test says) ----> B 198.18.2.2
    A ---- relay channel 2 (owned by B) / channel 1 (owned by A) ---- B

Relay first: the relay candidate is offered with the introduction (as the agent does), so a
pair whose direct path is blocked is up over the relay before the punch gives up, and moves to
the direct path without a new handshake when it opens.  Fallback: a direct path that stops
answering (PathWatch) moves the same session to the relay (PathFailed), and back when a
re-probe finds the direct path again.
"""

from __future__ import annotations

from enclave.discovery import Candidate, CandidateKind
from enclave.proto.events import (
    DataReceived,
    PathFailed,
    SessionClosed,
    SessionEstablished,
    UseRelay,
)
from tests.support.relay_pair import (
    DIRECT,
    PUB_A,
    PUB_B,
    RELAY_TO_A,
    RELAY_TO_B,
    A,
    B,
    relay_first_pair,
)
from tests.support.router import Host, Router, events_of, make_host, sim_pki


def relayed_pair(*, direct_open: bool) -> tuple[Router, Host, Host]:
    return relay_first_pair(11, direct_open=direct_open)


def up(a: Host, b: Host) -> bool:
    return a.node.session(B) is not None and b.node.session(A) is not None


def traffic(r: Router, a: Host, b: Host, seconds: float, tag: bytes) -> None:
    """Frames both ways every 50 ms (what keeps PathWatch's "sent since heard" true)."""
    for i in range(int(seconds / 0.05)):
        a.node.send_data(B, tag + b"a%d" % i, r.now)
        b.node.send_data(A, tag + b"b%d" % i, r.now)
        r.run(0.05)


def test_1_blocked_direct_path_session_up_over_the_relay_before_the_punch_gives_up() -> None:
    r, a, b = relayed_pair(direct_open=False)
    assert r.run_until(lambda: up(a, b), 5)
    assert a.node.peer_addr(B) == RELAY_TO_B and b.node.peer_addr(A) == RELAY_TO_A
    assert events_of(a, UseRelay) == [] and events_of(b, UseRelay) == []  # punch still on
    assert r.run_until(lambda: bool(events_of(a, UseRelay)), 10)  # then it fails (hook)
    assert a.node.peer_addr(B) == RELAY_TO_B  # the session stays where it is


def test_2_relay_then_direct_when_it_opens_same_session() -> None:
    r, a, b = relayed_pair(direct_open=False)
    assert r.run_until(lambda: up(a, b), 5)
    r.run(8)
    r.blocked -= DIRECT
    assert r.run_until(lambda: a.node.peer_addr(B) == PUB_B and b.node.peer_addr(A) == PUB_A, 10)
    for h in (a, b):
        assert len(events_of(h, SessionEstablished)) == 1 and events_of(h, SessionClosed) == []


def test_3_direct_path_dies_session_moves_to_relay_and_back() -> None:
    r, a, b = relayed_pair(direct_open=True)
    assert r.run_until(lambda: up(a, b) and a.node.peer_addr(B) == PUB_B
                       and b.node.peer_addr(A) == PUB_A, 10)
    traffic(r, a, b, 2.0, b"before")
    keys = (a.node.session(B), b.node.session(A))
    r.blocked |= DIRECT  # the site starts dropping UDP
    traffic(r, a, b, 8.0, b"blocked")
    assert events_of(a, PathFailed) and events_of(a, PathFailed)[0].addr == PUB_B
    assert a.node.peer_addr(B) == RELAY_TO_B and b.node.peer_addr(A) == RELAY_TO_A
    got = [e.frame for e in events_of(b, DataReceived)]
    n = len(got)
    traffic(r, a, b, 1.0, b"relayed")
    relayed = [e.frame for e in events_of(b, DataReceived)][n:]
    assert [f for f in relayed if f.startswith(b"relayed")] == [b"relayeda%d" % i
                                                                for i in range(20)]
    r.blocked -= DIRECT  # the block is lifted: a re-probe finds the direct path again
    traffic(r, a, b, 6.0, b"open")
    assert a.node.peer_addr(B) == PUB_B and b.node.peer_addr(A) == PUB_A
    assert (a.node.session(B), b.node.session(A)) == keys  # the same keys: no new handshake
    for h in (a, b):
        assert len(events_of(h, SessionEstablished)) == 1 and events_of(h, SessionClosed) == []


def test_4_no_relay_offered_the_session_stays_on_the_dead_path() -> None:
    pki = sim_pki()
    r = Router()
    a = r.add(make_host(pki, A, [PUB_A], intents={B}, seed=21))
    b = r.add(make_host(pki, B, [PUB_B], intents={A}, seed=22))
    a.nat_source, b.nat_source = PUB_A, PUB_B
    a.node.connect(B, [Candidate(PUB_B, CandidateKind.PUBLIC)], r.now, peer_key=b.public_key)
    b.node.connect(A, [Candidate(PUB_A, CandidateKind.PUBLIC)], r.now, peer_key=a.public_key)
    assert r.run_until(lambda: up(a, b), 5)
    traffic(r, a, b, 1.0, b"x")
    r.blocked |= DIRECT
    traffic(r, a, b, 6.0, b"y")
    assert events_of(a, PathFailed)
    assert a.node.peer_addr(B) == PUB_B  # nothing else answered: nowhere to move
    r.blocked -= DIRECT
    traffic(r, a, b, 4.0, b"z")
    assert a.node.peer_addr(B) == PUB_B and events_of(a, SessionClosed) == []
    assert [e.frame for e in events_of(b, DataReceived)][-1] == b"za79"
