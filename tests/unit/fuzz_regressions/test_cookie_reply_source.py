"""A COOKIE_REPLY counts only from an address our INIT went to (found by the ``node`` fuzz target,
bench/fuzz).

The cookie key is derived from the responder's public key, which is in its certificate, so
anyone who saw our INIT (an on-path observer, or the introduced peer itself) can seal a valid
reply. Before the fix the initiator answered such a reply with its whole INIT (with MAC2) to the
reply's source address, whatever it was, once per new cookie value: a 64-byte datagram from a
spoofed source became an INIT of up to 1,428 bytes aimed at any victim (reflection with
amplification). Now a reply from anywhere else is dropped and counted (cookie_wrong_source).
"""

from __future__ import annotations

from enclave.discovery.candidates import Candidate, CandidateKind
from enclave.proto.admission import source_bytes
from enclave.proto.cookie import CookieChecker
from enclave.proto.wire import INIT_MACS_SIZE, MAC_SIZE, MSG_HANDSHAKE_INIT
from tests.support.router import Host, make_host, sim_pki, udp

ADDR_C, ADDR_Z, VICTIM = udp("198.18.5.5"), udp("198.18.6.6"), udp("198.18.9.9", 80)
NOW = 100.0


def initiator() -> tuple[Host, Host, bytes]:
    """C with a handshake in flight to Z (which never answers); C's INIT as it left."""
    pki = sim_pki()
    c = make_host(pki, "CCCCC", [ADDR_C], intents={"ZZZZZ"}, seed=3)
    z = make_host(pki, "ZZZZZ", [ADDR_Z], intents={"CCCCC"}, seed=4)
    c.node.connect(z.name, [Candidate(ADDR_Z, CandidateKind.PUBLIC)], NOW, peer_key=z.public_key)
    c.node.handle_timer(NOW)
    [(init, dst)] = c.node.datagrams_to_send(NOW)
    assert (init[0], dst) == (MSG_HANDSHAKE_INIT, ADDR_Z)
    return c, z, init


def forged_reply(z: Host, init: bytes, seed: int) -> bytes:
    """A valid COOKIE_REPLY for `init`, sealed with nothing but Z's public key."""
    rnd = bytes([seed]) * 64
    return CookieChecker(z.public_key, lambda n: rnd[:n]).reply(init, b"any", NOW)


def test_cookie_reply_from_elsewhere_makes_the_initiator_send_nothing() -> None:
    c, z, init = initiator()
    for i in range(5):  # a new cookie each time: before the fix, one INIT each
        c.node.receive_datagram(forged_reply(z, init, i), VICTIM, NOW + 0.01 * i)
        assert c.node.datagrams_to_send(NOW + 0.01 * i) == []
    assert c.node.counters()["cookie_wrong_source"] == 5


def test_cookie_reply_from_the_responder_gets_the_init_with_mac2() -> None:
    c, z, init = initiator()
    reply = CookieChecker(z.public_key, lambda n: bytes(n)).reply(init, source_bytes(ADDR_C), NOW)
    c.node.receive_datagram(reply, ADDR_Z, NOW)
    [(again, dst)] = c.node.datagrams_to_send(NOW)
    assert dst == ADDR_Z
    assert again[:-INIT_MACS_SIZE] == init[:-INIT_MACS_SIZE]  # the same INIT body and MAC1 ...
    assert again[-MAC_SIZE:] != bytes(MAC_SIZE)  # ... now with a MAC2
    assert "cookie_wrong_source" not in c.node.counters()
