"""Two (or more) Nodes talking through the in-memory router: handshake, data, rekey, timers."""

from __future__ import annotations

import datetime as dt
import itertools

import nacl.bindings as sodium
import pytest

from enclave.discovery import Candidate, CandidateKind
from enclave.proto import timing as T
from enclave.proto.events import (
    PeerKeysUpdated,
    PeerRoamed,
    SessionClosed,
    SessionEstablished,
    SessionRekeyed,
)
from enclave.proto.wire import (
    MSG_CONTROL,
    MSG_HANDSHAKE_INIT,
    Cipher,
    CloseReason,
    aead_nonce,
    pack_transport_header,
)
from tests.support.peers import A, B, connect, connected, frames, pair
from tests.support.router import events_of, udp


@pytest.mark.parametrize(
    ("case", "aes_a", "aes_b", "cipher"),
    [
        (1, True, True, Cipher.AES256_GCM),
        (2, True, False, Cipher.CHACHA20_POLY1305),
        (3, False, True, Cipher.CHACHA20_POLY1305),
        (4, False, False, Cipher.CHACHA20_POLY1305),
    ],
)
def test_handshake_derives_matching_keys(
    case: int, aes_a: bool, aes_b: bool, cipher: Cipher
) -> None:
    _pki, r, a, b = pair(aes_a=aes_a, aes_b=aes_b)
    connect(r, a, b)
    ka, kb = a.node.session(B), b.node.session(A)
    assert ka is not None and kb is not None
    assert ka.cipher is cipher and kb.cipher is cipher
    assert ka.tx_key == kb.rx_key and ka.rx_key == kb.tx_key and ka.tx_key != ka.rx_key
    assert (ka.local_index, ka.remote_index) == (kb.remote_index, kb.local_index)
    # a DATA frame sealed with A's tx key by hand opens with B's rx key (what the fast path does)
    header = pack_transport_header(4, ka.remote_index, 7)
    nonce = aead_nonce(b"\0\0\0\0", 7)
    if cipher is Cipher.AES256_GCM:
        ct = sodium.crypto_aead_aes256gcm_encrypt(b"frame", header, nonce, ka.tx_key)
        assert sodium.crypto_aead_aes256gcm_decrypt(ct, header, nonce, kb.rx_key) == b"frame"
    else:
        ct = sodium.crypto_aead_chacha20poly1305_ietf_encrypt(b"frame", header, nonce, ka.tx_key)
        pt = sodium.crypto_aead_chacha20poly1305_ietf_decrypt(ct, header, nonce, kb.rx_key)
        assert pt == b"frame"
    # events: keys for the fast path come before "established"
    for h, peer in ((a, B), (b, A)):
        kinds = [type(e) for e in h.events]
        assert SessionEstablished in kinds
        est = kinds.index(SessionEstablished)
        assert PeerKeysUpdated in kinds[:est]
        upd = [e for e in h.events if isinstance(e, PeerKeysUpdated)][-1]
        assert upd.peer == peer and upd.tx is not None and upd.tx == h.node.session(peer)
    # the Python data path works both ways
    assert a.node.send_data(B, b"hello B", r.now)
    assert b.node.send_data(A, b"hello A", r.now)
    r.run(0.1)
    assert frames(b) == [b"hello B"] and frames(a) == [b"hello A"]


@pytest.mark.parametrize(("case", "loss", "dup", "reorder"), [(1, 0.3, 0, 0), (2, 0, 0.5, 0.5)])
def test_handshake_survives_loss_duplication_reorder(
    case: int, loss: float, dup: float, reorder: float
) -> None:
    _pki, r, a, b = pair(seed=case)
    r.loss, r.duplicate, r.reorder = loss, dup, reorder
    connect(r, a, b, timeout=60)
    assert a.node.session(B).tx_key == b.node.session(A).rx_key  # type: ignore[union-attr]
    assert len(events_of(a, SessionEstablished)) == 1
    assert len(events_of(b, SessionEstablished)) == 1


def test_simultaneous_initiation_converges_to_one_session() -> None:
    _pki, r, a, b = pair()
    at = r.now + 0.5
    a.node.connect(B, [Candidate(b.addrs[0], CandidateKind.PUBLIC)], r.now, punch_at=at,
                   peer_key=b.public_key)
    b.node.connect(A, [Candidate(a.addrs[0], CandidateKind.PUBLIC)], r.now, punch_at=at,
                   peer_key=a.public_key)
    assert r.run_until(lambda: connected(a, b), 10)
    r.run(30)
    ka, kb = a.node.session(B), b.node.session(A)
    assert ka is not None and kb is not None
    assert ka.tx_key == kb.rx_key and ka.local_index == kb.remote_index
    assert len(events_of(a, SessionEstablished)) == len(events_of(b, SessionEstablished)) == 1
    assert events_of(a, SessionRekeyed) == events_of(b, SessionRekeyed) == []
    # the lower name ("AAAAA") won and is the initiator
    assert events_of(a, SessionEstablished)[0].initiator is True
    assert events_of(b, SessionEstablished)[0].initiator is False


@pytest.mark.parametrize(("case", "loss"), [(1, 0.0), (2, 0.05)])
def test_rekey_under_continuous_traffic_loses_no_frames(case: int, loss: float) -> None:
    _pki, r, a, b = pair(seed=10 + case)
    connect(r, a, b)
    r.loss = 0.0
    sent_ab: list[bytes] = []
    sent_ba: list[bytes] = []
    end = r.now + 3 * T.REKEY_AFTER_TIME + 20
    i = 0
    # handshake/control messages may be lost; DATA frames are not dropped by the router, so
    # every frame lost would be the protocol's fault (a key switch without overlap)
    r.drop_filter = lambda data, _s, _d: data[0] != 4 and r.rng.random() < loss
    while r.now < end:
        i += 1
        fa, fb = f"a{i}".encode(), f"b{i}".encode()
        assert a.node.send_data(B, fa, r.now), f"A could not send at {r.now}"
        assert b.node.send_data(A, fb, r.now), f"B could not send at {r.now}"
        sent_ab.append(fa)
        sent_ba.append(fb)
        r.run(0.25)
    r.run(1)
    assert frames(b) == sent_ab
    assert frames(a) == sent_ba
    assert len(events_of(a, SessionRekeyed)) >= 3
    assert len(events_of(b, SessionRekeyed)) >= 3
    assert events_of(a, SessionClosed) == []
    # keys really changed (forward secrecy: fresh ephemeral keys each time)
    first = [e.tx for e in events_of(a, PeerKeysUpdated) if e.tx is not None]
    assert len({k.tx_key for k in first}) >= 4
    # keys never older than the hard limit were used: the current one is fresh
    created = a.node.session_created(B)
    assert created is not None and r.now - created < T.REJECT_AFTER_TIME


def test_roaming_moves_the_session_to_the_new_address() -> None:
    _pki, r, a, b = pair()
    connect(r, a, b)
    assert b.node.peer_addr(A) == udp("198.18.1.1")
    new = udp("198.18.1.1", 40000)  # A's NAT rebinds to a new port
    r.add_addr(a, new)
    a.nat_source = new
    a.node.send_data(B, b"after roam", r.now)
    r.run(0.1)
    assert frames(b) == [b"after roam"]
    assert b.node.peer_addr(A) == new
    assert events_of(b, PeerRoamed)[-1].addr == new
    b.node.send_data(A, b"reply", r.now)
    r.run(0.1)
    assert frames(a) == [b"reply"]
    # a replayed old packet from the old address does not move it back
    old_pkt = next(d for t, s, dst, d in reversed(r.log) if s == A and d[0] == 4)
    r.inject(old_pkt, udp("198.18.1.1"), udp("198.18.2.2"))
    r.run(0.1)
    assert b.node.peer_addr(A) == new


def test_keepalives_hold_an_idle_session_and_are_jittered() -> None:
    _pki, r, a, b = pair()
    connect(r, a, b)
    start = r.now
    r.run(200)
    assert events_of(a, SessionClosed) == [] and connected(a, b)
    ka = [t for t, s, _d, data in r.log if s == A and data[0] == MSG_CONTROL and t > start]
    gaps = [y - x for x, y in itertools.pairwise(ka)]
    assert gaps, "no keepalives"
    assert all(g <= T.KEEPALIVE_MAX + 0.5 for g in gaps)
    assert len({round(g, 3) for g in gaps}) > 1  # jittered


def test_dead_peer_detected() -> None:
    _pki, r, a, b = pair()
    connect(r, a, b)
    start = r.now
    r.blocked.add((B, udp("198.18.1.1")))  # B goes silent towards A
    assert r.run_until(lambda: bool(events_of(a, SessionClosed)), 60)
    assert events_of(a, SessionClosed)[0].reason is CloseReason.DEAD_PEER
    assert T.DEAD_PEER_TIMEOUT - 1 <= r.now - start <= T.DEAD_PEER_TIMEOUT + 3
    assert a.node.state_size() <= 1  # the init timestamp of B is all that is left
    assert events_of(a, PeerKeysUpdated)[-1].tx is None


@pytest.mark.parametrize(("case", "drop_first"), [(1, 0), (2, 2)])
def test_close_reaches_the_peer_within_seconds(case: int, drop_first: int) -> None:
    _pki, r, a, b = pair()
    connect(r, a, b)
    dropped = []

    def drop(data: bytes, sender: str, _dst: object) -> bool:
        if sender == A and data[0] == MSG_CONTROL and len(dropped) < drop_first:
            dropped.append(data)
            return True
        return False

    r.drop_filter = drop
    t0 = r.now
    a.node.close(B, r.now)
    assert events_of(a, SessionClosed) or r.run_until(lambda: bool(events_of(a, SessionClosed)), 1)
    assert r.run_until(lambda: bool(events_of(b, SessionClosed)), 2)
    assert events_of(b, SessionClosed)[0].reason is CloseReason.REMOTE
    assert r.now - t0 < 1.0
    r.run(2)
    assert a.node.session(B) is None and b.node.session(A) is None


def test_revoked_certificate_closes_the_session_on_both_sides() -> None:
    pki, r, a, b = pair()
    connect(r, a, b)
    pki.revoked.add(b.serial)
    a.node.revalidate(r.now)
    r.run(1)
    assert events_of(a, SessionClosed)[0].reason is CloseReason.CERT_INVALID
    assert events_of(b, SessionClosed)[0].reason is CloseReason.REMOTE
    # and B cannot come back while revoked
    b.node.connect(A, [Candidate(a.addrs[0], CandidateKind.PUBLIC)], r.now,
                   peer_key=a.public_key)
    r.run(10)
    assert a.node.session(B) is None


def test_expired_certificate_closes_on_revalidate() -> None:
    pki, r, a, b = pair()
    connect(r, a, b)
    pki.now = pki.clock() + dt.timedelta(days=31)  # B's (and A's) certificates expired
    b.node.revalidate(r.now)
    r.run(1)
    assert events_of(b, SessionClosed)[0].reason is CloseReason.CERT_INVALID
    assert events_of(a, SessionClosed)[0].reason is CloseReason.REMOTE


def test_withdrawn_intent_closes_and_peer_learns() -> None:
    _pki, r, a, b = pair()
    connect(r, a, b)
    a.intents.discard(B)
    a.node.revalidate(r.now)
    r.run(1)
    assert events_of(a, SessionClosed)[0].reason is CloseReason.LOCAL
    assert events_of(b, SessionClosed)[0].reason is CloseReason.REMOTE


def test_handshake_retries_with_backoff_then_fails() -> None:
    _pki, r, a, b = pair()
    r.blocked.add((A, udp("198.18.2.2")))
    a.node.connect(B, [Candidate(b.addrs[0], CandidateKind.PUBLIC)], r.now,
                   peer_key=b.public_key)
    r.run(200)
    inits = [t for t, s, _d, data in r.log if s == A and data[0] == MSG_HANDSHAKE_INIT]
    # distinct INIT messages = attempts; the first is carried by the punch rounds
    distinct = {data for _t, s, _d, data in r.log if s == A and data[0] == MSG_HANDSHAKE_INIT}
    assert len(distinct) == T.HANDSHAKE_MAX_ATTEMPTS
    assert inits[-1] - inits[0] > 60  # backed off, not hammering
    from enclave.proto.events import HandshakeFailed

    assert len(events_of(a, HandshakeFailed)) == 1
    assert a.node.state_size() == 1  # only the peer record (no session) is left
