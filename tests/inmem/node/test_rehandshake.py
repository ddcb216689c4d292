"""Node.rehandshake: after this system's certificate is renewed, every connected peer gets a
handshake at once, so the peer's data plane binds what the new certificate names (here new
gateway routes) instead of the old identity until the next rekey (before: none within 10 s)."""

from __future__ import annotations

import dataclasses
import ipaddress

from cryptography.hazmat.primitives.serialization import Encoding

from enclave.cert.ca import issue_system_certificate
from enclave.proto.events import PeerKeysUpdated
from tests.support.peers import A, connected_pair
from tests.support.pki import SKEW
from tests.support.router import events_of

ROUTE = ipaddress.IPv4Network("198.19.2.0/24")


def test_renewed_certificate_reaches_the_peer_without_waiting_for_a_rekey() -> None:
    pki, r, a, b = connected_pair()
    old = pki.validate(a.cert)
    assert old is not None and old.gateway_routes == ()
    renewed = issue_system_certificate(
        pki.ca_key, pki.ca, a.key.public_key(), name=A, org=pki.org,
        overlay_ip=old.overlay_ip, overlay_prefix=old.overlay_prefix,
        now=pki.clock() - SKEW, lifetime=old.not_after - old.not_before,
        gateway_routes=(ROUTE,))
    a.node.creds = dataclasses.replace(a.node.creds, cert_der=renewed.public_bytes(Encoding.DER))
    b.events.clear()
    a.node.rehandshake(r.now)
    # the session is younger than MIN_REHANDSHAKE_INTERVAL: B ignores the first INIT, A's
    # retries carry the new certificate through, still far below REKEY_AFTER_TIME (120 s)
    r.run(10.0)
    updates = [e for e in events_of(b, PeerKeysUpdated) if e.peer == A and e.identity]
    assert updates, "no new keys at B"
    assert updates[-1].identity is not None
    assert updates[-1].identity.gateway_routes == (ROUTE,)
    assert a.node.session(b.name) is not None and b.node.session(A) is not None


def test_without_a_session_nothing_is_sent() -> None:
    _pki, r, a, b = connected_pair()
    a.node.close(b.name, r.now)
    r.run(1.0)
    a.node.rehandshake(r.now)
    assert a.node.datagrams_to_send(r.now) == []
