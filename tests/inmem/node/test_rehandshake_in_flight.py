"""A certificate renewed while a handshake is in flight, or just after a session came up (how a
new gateway starts: introduced, then renewed with its routes at once): the peer binds the new
certificate within a round trip or two, not at the next rekey (120 s) and not only after
MIN_REHANDSHAKE_INTERVAL. A late INIT carrying the young session's own certificate is still
ignored."""

from __future__ import annotations

import dataclasses
import ipaddress

from cryptography.hazmat.primitives.serialization import Encoding

from enclave.cert.ca import issue_system_certificate
from enclave.discovery import Candidate, CandidateKind
from enclave.proto.events import PeerKeysUpdated
from enclave.proto.wire import MSG_HANDSHAKE_INIT, MSG_HANDSHAKE_RESPONSE
from tests.support.peers import ADDR_A, ADDR_B, A, B, connected, connected_pair, pair
from tests.support.pki import SKEW, Pki
from tests.support.router import Host, Router, events_of

ROUTE = ipaddress.IPv4Network("198.19.2.0/24")


def _renew(pki: Pki, a: Host) -> None:
    """Give A a renewed certificate naming ROUTE, as AgentConnections.renewed does."""
    old = pki.validate(a.cert)
    assert old is not None and old.gateway_routes == ()
    renewed = issue_system_certificate(
        pki.ca_key, pki.ca, a.key.public_key(), name=a.name, org=pki.org,
        overlay_ip=old.overlay_ip, overlay_prefix=old.overlay_prefix,
        now=pki.clock() - SKEW, lifetime=old.not_after - old.not_before,
        gateway_routes=(ROUTE,))
    a.node.creds = dataclasses.replace(a.node.creds, cert_der=renewed.public_bytes(Encoding.DER))


def _bound_by_b(b: Host) -> list[tuple[ipaddress.IPv4Network, ...]]:
    """A's gateway routes in each set of keys B's data plane was given, oldest first."""
    return [e.identity.gateway_routes for e in events_of(b, PeerKeysUpdated)
            if e.peer == A and e.identity is not None]


def _sent(r: Router, sender: str, msg_type: int) -> bool:
    return any(name == sender and data[0] == msg_type for _t, name, _dst, data in r.log)


def test_renewed_while_its_init_is_in_flight() -> None:
    """A's INIT (old certificate) is on its way when the renewal lands: the session it makes
    binds the old certificate and is handshaken again at once (before: kept until the rekey, so
    B's data plane dropped A's LAN traffic as spoofed for two minutes)."""
    pki, r, a, b = pair()
    a.node.connect(B, [Candidate(ADDR_B, CandidateKind.PUBLIC)], r.now, peer_key=b.public_key)
    assert r.run_until(lambda: _sent(r, A, MSG_HANDSHAKE_INIT), 1.0)
    _renew(pki, a)
    a.node.rehandshake(r.now)  # no session yet: nothing to start
    assert r.run_until(lambda: connected(a, b), 5.0)
    assert _bound_by_b(b)[0] == ()  # the in-flight handshake presented the old certificate
    assert r.run_until(lambda: _bound_by_b(b)[-1] == (ROUTE,), 1.0), _bound_by_b(b)
    r.run(2.0)
    assert _bound_by_b(b)[-1] == (ROUTE,) and connected(a, b)


def test_renewed_while_answering() -> None:
    """B initiates; A's RESPONSE (old certificate) is on its way when A is renewed: A handshakes
    again as soon as B's CONFIRM makes the session."""
    pki, r, a, b = pair()
    b.node.connect(A, [Candidate(ADDR_A, CandidateKind.PUBLIC)], r.now, peer_key=a.public_key)
    assert r.run_until(lambda: _sent(r, A, MSG_HANDSHAKE_RESPONSE), 1.0)
    _renew(pki, a)
    a.node.rehandshake(r.now)
    assert r.run_until(lambda: connected(a, b), 5.0)
    assert _bound_by_b(b)[0] == ()
    assert r.run_until(lambda: _bound_by_b(b)[-1] == (ROUTE,), 1.0), _bound_by_b(b)
    r.run(2.0)
    assert _bound_by_b(b)[-1] == (ROUTE,) and connected(a, b)


def test_renewed_just_after_the_session_came_up() -> None:
    """A session younger than MIN_REHANDSHAKE_INTERVAL (5 s) takes an INIT with a new
    certificate at once (before: ignored as a late punch INIT; A's retries got through only
    after the 5 s)."""
    pki, r, a, b = connected_pair()
    _renew(pki, a)
    a.node.rehandshake(r.now)
    assert r.run_until(lambda: _bound_by_b(b)[-1] == (ROUTE,), 0.5), _bound_by_b(b)
    assert connected(a, b)


def test_young_session_ignores_an_init_with_its_own_certificate() -> None:
    """The rule the renewal bends, kept otherwise: an INIT from the peer of a session younger
    than MIN_REHANDSHAKE_INTERVAL, with the certificate that session authenticated, is a late
    punch INIT and gets no RESPONSE."""
    _pki, r, a, b = connected_pair()
    keys = b.node.session(A)
    r.log.clear()
    a.node.rehandshake(r.now)  # nothing was renewed: the same certificate
    r.run(0.5)
    assert _sent(r, A, MSG_HANDSHAKE_INIT)
    assert not _sent(r, B, MSG_HANDSHAKE_RESPONSE)
    assert b.node.session(A) is keys
