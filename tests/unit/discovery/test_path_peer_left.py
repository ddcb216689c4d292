"""PathManager after the peer left a path or the session's path failed (enclave/discovery/
paths.py), on an injected clock: what was confirmed before says nothing any more.

    peer_left(direct-udp, relay)   the peer roamed onto the relay: direct-udp and the direct TCP
                                   path (ranks better than the relay) must answer afresh, so the
                                   relay is the best path (before, only the path left was
                                   unconfirmed and a dead direct-tcp took the session)
    path_failed(addr)              a reply to a probe sent before the failure (a TCP stream's
                                   late segment, say) confirms nothing
"""

from __future__ import annotations

import random

import pytest

from enclave.discovery import Candidate, CandidateKind, PathAddr, PathManager, Transport

pytestmark = pytest.mark.unit

UDP = Candidate(PathAddr(Transport.UDP, "198.18.0.2", 51820), CandidateKind.PUBLIC)
TCP = Candidate(PathAddr(Transport.TCP, "198.18.0.2", 51820), CandidateKind.PUBLIC)
REL = Candidate(PathAddr(Transport.RELAY, "198.18.9.9", 5), CandidateKind.RELAY)


def confirmed_all(now: float = 10.0) -> PathManager:
    pm = PathManager([UDP, TCP, REL], 0.0, random.Random(1))
    for c in (UDP, TCP, REL):
        pm.confirm(c.addr, now, rtt=0.001)
    assert pm.best() == UDP.addr
    return pm


def test_the_peer_left_for_the_relay_every_better_path_answers_afresh() -> None:
    pm = confirmed_all()
    pending = pm.new_probe(TCP.addr, 10.5)  # a probe of the TCP path out before the move
    pm.peer_left(UDP.addr, REL.addr)
    assert pm.best() == REL.addr
    assert set(pm.confirmed()) == {REL.addr}
    assert not pm.probe_reply(pending, TCP.addr, 11.0)  # its late reply is not taken
    fresh = pm.new_probe(TCP.addr, 12.0)
    assert pm.probe_reply(fresh, TCP.addr, 12.01)  # a fresh answer is
    assert pm.best() == TCP.addr


def test_a_roam_between_equal_paths_unconfirms_only_the_one_left() -> None:
    other = PathAddr(Transport.UDP, "198.18.0.3", 4000)
    pm = confirmed_all()
    pm.peer_left(UDP.addr, other)
    assert set(pm.confirmed()) == {TCP.addr, REL.addr}


def test_a_reply_to_a_probe_sent_before_the_path_failed_confirms_nothing() -> None:
    pm = confirmed_all()
    before = pm.new_probe(TCP.addr, 10.5)
    pm.path_failed(UDP.addr, 11.0)
    assert pm.confirmed() == []
    assert not pm.probe_reply(before, TCP.addr, 11.2)
    assert pm.best() is None
