"""`enclave ping` in the sans-I/O core: Node.send_ping -> PING in the session -> authenticated
PONG -> PingAnswered; forged, replayed and unsolicited messages get nothing (in-memory router)."""

from __future__ import annotations

import os

import nacl.bindings as sodium

from enclave.discovery import Candidate, CandidateKind, PathAddr
from enclave.proto.events import PingAnswered
from enclave.proto.wire import (
    CTRL_PING,
    CTRL_PONG,
    MSG_CONTROL,
    NONCE_DOMAIN_CONTROL,
    Control,
    aead_nonce,
    pack_transport_header,
)
from tests.support.router import Host, Router, events_of, make_host, sim_pki, udp

A, B = "AAAAA", "BBBBB"
ATTACKER = udp("198.18.9.9")


def connected_pair() -> tuple[Router, Host, Host]:
    pki = sim_pki()
    r = Router(latency=0.01)
    a = r.add(make_host(pki, A, [udp("198.18.1.1")], intents={B}, seed=1))
    b = r.add(make_host(pki, B, [udp("198.18.2.2")], intents={A}, seed=2))
    a.node.connect(B, [Candidate(b.addrs[0], CandidateKind.PUBLIC)], r.now,
                   peer_key=b.public_key)
    assert r.run_until(
        lambda: a.node.session(B) is not None and b.node.session(A) is not None, 10.0)
    r.run(1.0)
    return r, a, b


def sent_by(r: Router, name: str, dst: PathAddr, since: float) -> list[bytes]:
    return [d for t, s, to, d in r.log if s == name and to == dst and t >= since]


def test_ping_gets_an_authenticated_pong_with_rtt_and_path() -> None:
    r, a, b = connected_pair()
    ping_id = a.node.send_ping(B, r.now)
    assert ping_id is not None
    assert r.run_until(lambda: bool(events_of(a, PingAnswered)), 1.0)
    (ans,) = events_of(a, PingAnswered)
    assert ans.peer == B and ans.ping_id == ping_id
    assert ans.addr == b.addrs[0]  # the path the PING went out on
    assert 0.0 < ans.rtt < 1.0  # one router round trip on the simulated clock
    r.run(2.0)
    assert len(events_of(a, PingAnswered)) == 1  # exactly one answer


def test_no_session_no_ping() -> None:
    r, a, _b = connected_pair()
    assert a.node.send_ping("CCCCC", r.now) is None


def test_forged_ping_gets_nothing() -> None:
    """A PING sealed with a key the attacker made up, at B's real receiver index."""
    r, _a, b = connected_pair()
    keys = b.node.session(A)
    assert keys is not None
    counter = 1 << 40
    header = pack_transport_header(MSG_CONTROL, keys.local_index, counter)
    sealed = sodium.crypto_aead_chacha20poly1305_ietf_encrypt(
        Control(CTRL_PING, 1234).encode(), header, aead_nonce(NONCE_DOMAIN_CONTROL, counter),
        os.urandom(32))
    drops = b.node.counters().get("replayed_or_forged", 0)
    start = r.now
    r.inject(header + sealed, ATTACKER, b.addrs[0])
    r.run(1.0)
    assert sent_by(r, B, ATTACKER, start) == []
    assert b.node.counters()["replayed_or_forged"] == drops + 1


def test_replayed_ping_gets_no_second_pong() -> None:
    """A's real PING, captured and sent again from elsewhere: the replay window drops it."""
    r, a, _b = connected_pair()
    assert a.node.send_ping(B, r.now) is not None
    (ping, dst), = a.node.datagrams_to_send(r.now)  # take it off the wire ourselves
    assert isinstance(dst, PathAddr)
    start = r.now
    r.inject(ping, a.addrs[0], dst)
    assert r.run_until(lambda: bool(events_of(a, PingAnswered)), 1.0)
    r.inject(ping, ATTACKER, dst)
    r.run(1.0)
    assert sent_by(r, B, ATTACKER, start) == []
    assert len(events_of(a, PingAnswered)) == 1


def test_unsolicited_pong_is_dropped_not_reported() -> None:
    """An authenticated PONG whose id A never sent (B is buggy or replays an old id)."""
    r, a, b = connected_pair()
    peer = b.node._peers[A]  # B's session with A: seal a PONG with B's real keys
    assert peer.current is not None
    msg = peer.current.seal_control(Control(CTRL_PONG, 77).encode(), r.now)
    r.inject(msg, b.addrs[0], a.addrs[0])
    r.run(1.0)
    assert events_of(a, PingAnswered) == []
    assert a.node.counters()["pong_unexpected"] == 1


def test_pings_end_with_the_session() -> None:
    r, a, _b = connected_pair()
    r.blocked.add((B, a.addrs[0]))  # B's PONG never arrives
    assert a.node.send_ping(B, r.now) is not None
    r.run(0.5)
    assert len(a.node._pings) == 1
    a.node.close(B, r.now)
    assert len(a.node._pings) == 0
