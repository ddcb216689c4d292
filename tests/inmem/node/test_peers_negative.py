"""Strangers get silence: no reply, no state.  Replays create nothing; floods are limited."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.proto.cookie import KeyedMac, mac1_key, stamp_init
from enclave.proto.events import SessionEstablished, SessionRekeyed
from enclave.proto.handshake import InitiatorHandshake
from enclave.proto.wire import (
    INIT_MACS_SIZE,
    MSG_HANDSHAKE_CONFIRM,
    MSG_HANDSHAKE_INIT,
    MSG_HANDSHAKE_RESPONSE,
)
from tests.support.peers import (
    ADDR_A,
    ADDR_B,
    ADDR_M,
    A,
    B,
    M,
    capture_init,
    connected_pair,
    silent,
    victim_b,
)
from tests.support.router import Host, events_of, make_host, sim_pki


def test_stranger_cases_are_silent() -> None:
    pki = sim_pki()
    other = sim_pki("evil")
    r, b = victim_b(pki)
    cases: list[tuple[int, str, bytes]] = []
    # 1 a certificate from another CA (same name as an intended peer)
    cases.append((1, "wrong CA", capture_init(other, A, to_key=b.public_key)))
    # 2 an expired certificate
    old = pki.issue(A, start=pki.clock() - dt.timedelta(days=60), lifetime=dt.timedelta(days=1))
    cases.append((2, "expired", capture_init(pki, A, to_key=b.public_key, key_cert=old)))
    # 3 a revoked certificate
    rev = pki.issue(A)
    pki.revoked.add(rev[2])
    cases.append((3, "revoked", capture_init(pki, A, to_key=b.public_key, key_cert=rev)))
    # 4 a valid certificate with a name B does not intend to talk to
    cases.append((4, "unexpected name", capture_init(pki, M, to_key=b.public_key)))
    # 5 a valid INIT whose signature was tampered with (MAC1 made again: B's certificate is
    # no secret to an introduced peer, so the signature check must catch it)
    good = capture_init(pki, A, to_key=b.public_key)
    body = good[:-INIT_MACS_SIZE]
    cases.append((5, "bad signature", remac(body[:-1] + bytes([body[-1] ^ 1]), b)))
    # 6 a valid INIT with a field changed after signing (timestamp), MAC1 made again
    cases.append((6, "tampered field", remac(body[:8] + bytes([body[8] ^ 1]) + body[9:], b)))
    # 7 somebody else's certificate with our own key signing: cert of A, key of M
    mkey, _mder, _ = pki.issue(M)
    _akey, ader, aserial = pki.issue(A)
    cases.append((7, "cert/key mismatch", capture_init(pki, A, to_key=b.public_key,
                                                           key_cert=(mkey, ader, aserial))))
    # 8-11 truncated, oversized, garbage, confirm/response for unknown indices
    cases.append((8, "truncated", good[: len(good) // 2]))
    cases.append((9, "oversized", good + bytes(2000)))
    cases.append((10, "garbage", bytes(range(256)) * 3))
    cases.append((11, "confirm unknown index", bytes([MSG_HANDSHAKE_CONFIRM, 0, 0, 0]) + bytes(68)))
    cases.append((12, "response unknown", bytes([MSG_HANDSHAKE_RESPONSE, 0, 0, 0]) + bytes(300)))
    cases.append((13, "data unknown index", bytes([4, 0, 0, 0]) + bytes(60)))
    cases.append((14, "empty", b""))
    for num, what, data in cases:
        try:
            silent(r, b, data)
        except AssertionError as exc:  # pragma: no cover - message for the failing case
            raise AssertionError(f"case {num} ({what}): {exc}") from None
    assert b.node.state_size() == 0


def remac(body: bytes, victim: Host) -> bytes:
    """An INIT body with a fresh, valid MAC1 for `victim` (and no MAC2)."""
    return stamp_init(body, KeyedMac(mac1_key(victim.public_key)).digest(body), None)


def test_valid_init_is_answered_positive_control() -> None:
    """The negative cases above are silent for the right reason: a good INIT is answered."""
    pki = sim_pki()
    r, _b = victim_b(pki)
    r.log.clear()
    r.inject(capture_init(pki, A, to_key=_b.public_key), ADDR_M, ADDR_B)
    r.run(0.1)
    assert [x[3][0] for x in r.log if x[1] == B] == [MSG_HANDSHAKE_RESPONSE]


def test_replayed_handshake_messages_create_no_state_and_do_not_rekey() -> None:
    _pki, r, a, b = connected_pair()
    r.run(10)
    init = next(d for _t, s, _d, d in r.log if s == A and d[0] == MSG_HANDSHAKE_INIT)
    confirm = next(d for _t, s, _d, d in r.log if s == A and d[0] == MSG_HANDSHAKE_CONFIRM)
    resp = next(d for _t, s, _d, d in r.log if s == B and d[0] == MSG_HANDSHAKE_RESPONSE)
    keys_b, keys_a = b.node.session(A), a.node.session(B)
    size_b, size_a = b.node.state_size(), a.node.state_size()
    for data, victim in ((init, b), (init, b), (resp, a), (confirm, b)):
        for src in (ADDR_M, ADDR_A, ADDR_B):
            r.inject(data, src, victim.addrs[0])
    r.log.clear()
    r.run(1)
    assert [x for x in r.log if x[3][0] in (MSG_HANDSHAKE_RESPONSE, MSG_HANDSHAKE_CONFIRM)] == []
    assert b.node.session(A) == keys_b and a.node.session(B) == keys_a
    assert b.node.state_size() == size_b and a.node.state_size() == size_a
    assert events_of(a, SessionRekeyed) == events_of(b, SessionRekeyed) == []
    assert len(events_of(b, SessionEstablished)) == 1


def test_replayed_transport_packets_are_dropped() -> None:
    _pki, r, a, b = connected_pair()
    a.node.send_data(B, b"once", r.now)
    r.run(0.1)
    pkt = next(d for _t, s, _d, d in reversed(r.log) if s == A and d[0] == 4)
    for _ in range(3):
        r.inject(pkt, ADDR_A, ADDR_B)
    r.run(0.1)
    from enclave.proto.events import DataReceived

    assert [e.frame for e in events_of(b, DataReceived)] == [b"once"]


def test_init_flood_is_rate_limited_and_bounded() -> None:
    pki = sim_pki()
    r, b = victim_b(pki)
    # 500 distinct, individually valid INITs (fresh timestamps) from one source within 0.5 s
    m = make_host(pki, A, [ADDR_M], intents={B}, seed=9)
    inits = [
        InitiatorHandshake(
            m.node.creds, responder_key=b.public_key, local_index=i + 1,
            timestamp=10**18 + i, random_bytes=os.urandom,
        ).init_bytes
        for i in range(500)
    ]
    r.log.clear()
    for d in inits:
        r.inject(d, ADDR_M, ADDR_B)
    r.run(0.5)
    # work (a RESPONSE) only within the per-identity burst; once the offered load is high the
    # rest get cookie replies (smaller than the INIT, no work)
    answers = [x for x in r.log if x[1] == B and x[3][0] == MSG_HANDSHAKE_RESPONSE]
    assert 1 <= len(answers) <= 25  # burst of 10 per claimed identity, 20 per source IP
    # at most one pending handshake per peer is kept, whatever the flood
    assert b.node.state_size() <= 3


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=1600), st.integers(min_value=0, max_value=5))
def test_fuzzed_datagrams_never_crash_or_grow_state(data: bytes, first: int) -> None:
    node = _FUZZ[0]
    before = node.node.state_size()
    pkt = bytes([first]) + data[1:] if data else data
    node.node.receive_datagram(pkt, ADDR_M, 1000.0)
    node.node.handle_timer(1000.0)
    assert node.node.datagrams_to_send(1000.0) == []
    assert node.node.state_size() == before


@pytest.fixture(autouse=True, scope="module")
def _fuzz_target() -> None:
    pki = sim_pki()
    _FUZZ.append(make_host(pki, B, [ADDR_B], intents={A}, seed=3))


_FUZZ: list[Host] = []
