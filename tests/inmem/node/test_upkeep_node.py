"""The Node's own upkeep (enclave/proto/upkeep.py) between in-memory peers on a simulated clock:
rtt probes once a session is up, reconnect after a lost session (not after a local close),
relay re-offers until a session exists.  The asyncio shell used to keep these timers; here no
shell runs at all."""

from __future__ import annotations

from enclave.discovery import Candidate, CandidateKind, PathAddr, Transport
from enclave.proto import timing as T
from enclave.proto.events import Reconnecting, SessionClosed, SessionEstablished
from enclave.proto.wire import MSG_HANDSHAKE_INIT, CloseReason
from tests.support.peers import ADDR_A, ADDR_B, A, B, connect, connected, pair
from tests.support.router import events_of

RELAY = PathAddr(Transport.RELAY, "198.18.9.9", 2)  # relay channel towards B


def test_rtt_is_measured_once_a_session_is_up() -> None:
    _pki, r, a, b = pair()
    connect(r, a, b)
    r.run(1)
    assert a.node.rtt(B) is not None  # B never called connect(): it has no paths to probe


def test_a_lost_session_is_set_up_again() -> None:
    _pki, r, a, b = pair()
    connect(r, a, b)
    r.blocked |= {(A, ADDR_B), (B, ADDR_A)}
    assert r.run_until(lambda: bool(events_of(a, SessionClosed)), T.DEAD_PEER_TIMEOUT + 10)
    assert events_of(a, SessionClosed)[-1].reason is CloseReason.DEAD_PEER
    r.blocked.clear()
    assert r.run_until(lambda: connected(a, b), T.RECONNECT_DELAY + 20)
    assert events_of(a, Reconnecting) == [Reconnecting(B)]
    assert len(events_of(a, SessionEstablished)) == 2


def test_a_remote_close_reconnects_a_local_close_does_not() -> None:
    _pki, r, a, b = pair()
    connect(r, a, b)
    b.node.close(A, r.now)  # B closes locally: it does not come back on its own ...
    assert r.run_until(lambda: bool(events_of(a, Reconnecting)), T.RECONNECT_DELAY + 2)
    assert events_of(a, SessionClosed)[-1].reason is CloseReason.REMOTE
    assert r.run_until(lambda: connected(a, b), 20)  # ... A, who wanted B, connects again
    assert events_of(b, Reconnecting) == []
    a.node.close(B, r.now)  # now A closes locally: nobody reconnects
    r.run(10 * T.RECONNECT_DELAY)
    assert len(events_of(a, Reconnecting)) == 1 and events_of(b, Reconnecting) == []
    assert a.node.session(B) is None


def test_a_relay_candidate_is_offered_again_until_a_session_is_up() -> None:
    _pki, r, a, b = pair()
    r.add_addr(a, PathAddr(Transport.RELAY, "198.18.9.9", 1))  # A's end of the channel
    r.blocked |= {(A, ADDR_B), (A, RELAY)}  # neither path works yet
    a.node.connect(B, [Candidate(ADDR_B, CandidateKind.PUBLIC)], r.now, peer_key=b.public_key)
    r.run(0.5)
    r.log.clear()
    a.node.add_candidate(B, Candidate(RELAY, CandidateKind.RELAY), r.now)
    r.run(2)
    inits = [t for t, s, dst, d in r.log if s == A and dst == RELAY and d[0] == MSG_HANDSHAKE_INIT]
    assert len(inits) >= 2 / T.RELAY_NUDGE_INTERVAL - 1  # re-offered every nudge interval
    r.blocked.clear()
    assert r.run_until(lambda: connected(a, b), 20)
    r.log.clear()
    r.run(5)
    assert not [d for _t, s, dst, d in r.log if s == A and dst == RELAY]  # stops once up
