"""The initiator's side of cookies, in memory: a responder's COOKIE_REPLY makes A send its INIT
again with MAC2 (once per new cookie); forged, malformed or replayed replies make A send nothing
and are counted.  A retired type-1 INIT is dropped and counted by the responder."""

from __future__ import annotations

import os

from enclave.discovery import Candidate, CandidateKind
from enclave.proto.cookie import CookieChecker
from enclave.proto.wire import (
    MAC_SIZE,
    MSG_COOKIE_REPLY,
    MSG_HANDSHAKE_INIT,
    MSG_HANDSHAKE_INIT_V1,
)
from tests.support.peers import ADDR_A, ADDR_B, A, B, silent, victim_b
from tests.support.router import Host, Router, make_host, sim_pki

SRC_A = b"udp|198.18.1.1|51820"  # A's address as B sees it (tests.support.peers.ADDR_A)


def a_initiating() -> tuple[Router, Host, bytes, bytes]:
    """A alone, connecting to B (not on the router): A's INIT as sent, and B's public key."""
    pki = sim_pki()
    r = Router()
    a = r.add(make_host(pki, A, [ADDR_A], intents={B}, seed=1))
    b_key = make_host(pki, B, [ADDR_B], intents={A}, seed=2).public_key
    a.node.connect(B, [Candidate(ADDR_B, CandidateKind.PUBLIC)], r.now, peer_key=b_key)
    r.run(0.3)
    init = next(d for _t, s, _d, d in r.log if s == A and d[0] == MSG_HANDSHAKE_INIT)
    return r, a, init, b_key


def sent_by_a(r: Router, a: Host, after: int) -> list[bytes]:
    return [d for _t, s, dst, d in r.log[after:] if s == a.name and dst == ADDR_B]


def test_a_cookie_reply_makes_the_initiator_send_mac2_once() -> None:
    r, a, init, b_key = a_initiating()
    b_checker = CookieChecker(b_key, os.urandom)  # B's side, as under load
    reply = b_checker.reply(init, SRC_A, r.now)
    mark = len(r.log)
    r.inject(reply, ADDR_B, ADDR_A)
    r.run(0.001)
    again = [d for d in sent_by_a(r, a, mark) if d[0] == MSG_HANDSHAKE_INIT]
    assert len(again) == 1 and again[0][:-MAC_SIZE] == init[:-MAC_SIZE]
    assert b_checker.check_mac2(again[0], SRC_A, r.now)  # B would admit it now
    mark = len(r.log)
    r.inject(reply, ADDR_B, ADDR_A)  # the same reply again (a replay): nothing new to send
    r.run(0.001)
    assert [d for d in sent_by_a(r, a, mark) if d[0] == MSG_HANDSHAKE_INIT] == []
    # A's later INITs to B carry MAC2 (the punch rounds resend the INIT)
    mark = len(r.log)
    r.run(0.5)
    later = [d for d in sent_by_a(r, a, mark) if d[0] == MSG_HANDSHAKE_INIT]
    assert later and all(b_checker.check_mac2(d, SRC_A, r.now) for d in later)


def test_forged_and_malformed_cookie_replies_are_ignored_and_counted() -> None:
    r, a, init, b_key = a_initiating()
    good = CookieChecker(b_key, os.urandom).reply(init, SRC_A, r.now)
    index = good[4:8]
    stranger_key = make_host(sim_pki("evil"), B, [], seed=3).public_key
    cases = [
        (1, good[:-1], "cookie_invalid"),  # truncated
        (2, good[:-1] + bytes([good[-1] ^ 1]), "cookie_invalid"),  # tag flipped
        (3, CookieChecker(stranger_key, os.urandom).reply(init, SRC_A, r.now),
         "cookie_invalid"),  # sealed with another responder's key
        (4, bytes([MSG_COOKIE_REPLY, 0, 0, 0]) + index + os.urandom(56), "cookie_invalid"),
        (5, bytes([MSG_COOKIE_REPLY, 0, 0, 0]) + bytes(60), "cookie_unknown_index"),
        (6, bytes([MSG_COOKIE_REPLY, 0, 0, 0]), "cookie_unknown_index"),
    ]
    for case, data, reason in cases:
        before = a.node.counters().get(reason, 0)
        mark = len(r.log)
        r.inject(data, ADDR_B, ADDR_A)
        r.run(0.001)
        assert sent_by_a(r, a, mark) == [], case
        assert a.node.counters().get(reason, 0) == before + 1, (case, a.node.counters())


def test_a_retired_type_1_init_is_dropped_and_counted() -> None:
    pki = sim_pki()
    r, b = victim_b(pki)
    silent(r, b, bytes([MSG_HANDSHAKE_INIT_V1, 0, 0, 0]) + bytes(1200))
    assert b.node.counters() == {"init_legacy": 1}
