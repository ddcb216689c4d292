"""A repeated INIT gets the cached RESPONSE only at a source plausibly the initiator's
(enclave.proto.init_intake): the first INIT's source, an address whose IP is one of the peer's
known candidates' (any port: a symmetric NAT's mapping), the relay channel.  A captured INIT
replayed from anywhere else before the CONFIRM gets nothing back and uses up none of the resends.

    A 198.18.1.1 (PUB_A), LAN 198.19.1.10, IPv6 2001:db8:1::10, relay channel 1 as B sees it
    B 198.18.2.2 (PUB_B)                   M 198.18.3.3: a stranger holding A's captured INIT
"""

from __future__ import annotations

import pytest

from enclave.discovery import Candidate, CandidateKind, PathAddr, Transport
from enclave.proto.timing import MAX_RESPONSE_RESENDS
from enclave.proto.wire import MSG_HANDSHAKE_CONFIRM, MSG_HANDSHAKE_INIT, MSG_HANDSHAKE_RESPONSE
from tests.support.relay_pair import RELAY_TO_A, relay_first_pair
from tests.support.router import Host, make_host, sim_pki, udp

A, B = "AAAAA", "BBBBB"
PUB_A, LAN_A, V6_A = udp("198.18.1.1"), udp("198.19.1.10"), udp("2001:db8:1::10")
PUB_B = udp("198.18.2.2")
NAT_A = udp("198.18.1.1", 40001)  # A's mapping towards B on a symmetric NAT: port unknown to B
STRANGERS = [
    udp("198.18.3.3"),
    udp("198.18.3.3", 40001),
    PathAddr(Transport.TCP, "198.18.3.3", 51820),
    PathAddr(Transport.RELAY, RELAY_TO_A.host, 7),  # the same relay, another peer's channel
    PathAddr(Transport.RELAY_TLS, RELAY_TO_A.host, RELAY_TO_A.port),
]
NOW = 100.0


def pending(*, introduced: bool) -> tuple[Host, Host, bytes]:
    """A's INIT answered by B from PUB_A, CONFIRM not yet sent.  `introduced`: B holds A's
    introduction (its candidates, as the agent gives them) and its relay channel."""
    pki = sim_pki()
    a = make_host(pki, A, [PUB_A], intents={B}, seed=1)
    b = make_host(pki, B, [PUB_B], intents={A}, seed=2)
    if introduced:  # B's own punch starts later: A's INIT arrives first and B answers it
        b.node.connect(A, [Candidate(PUB_A, CandidateKind.PUBLIC),
                           Candidate(LAN_A, CandidateKind.PRIVATE),
                           Candidate(V6_A, CandidateKind.PUBLIC)],
                       NOW, punch_at=NOW + 30, peer_key=a.public_key)
        b.node.add_candidate(A, Candidate(RELAY_TO_A, CandidateKind.RELAY), NOW)
    a.node.connect(B, [Candidate(PUB_B, CandidateKind.PUBLIC)], NOW, peer_key=b.public_key)
    a.node.handle_timer(NOW)
    init = next(d for d, _ in a.node.datagrams_to_send(NOW) if d[0] == MSG_HANDSHAKE_INIT)
    b.node.receive_datagram(init, PUB_A, NOW)
    assert responses(b) == [PUB_A]
    return a, b, init


def answers(h: Host) -> list[tuple[bytes, PathAddr]]:
    """The RESPONSEs `h` sent since last asked, with where to (the rest it sent is dropped)."""
    out = h.node.datagrams_to_send(NOW)
    return [(d, dst) for d, dst in out if d[0] == MSG_HANDSHAKE_RESPONSE
            and isinstance(dst, PathAddr)]


def responses(h: Host) -> list[PathAddr]:
    return [dst for _d, dst in answers(h)]


def sent(h: Host) -> list[tuple[bytes, PathAddr]]:
    return [(d, dst) for d, dst in h.node.datagrams_to_send(NOW) if isinstance(dst, PathAddr)]


def complete(a: Host, b: Host, response: bytes, confirm_from: PathAddr) -> None:
    """Hand B's RESPONSE to A and A's CONFIRM to B (from `confirm_from`): one session."""
    a.node.receive_datagram(response, PUB_B, NOW)
    confirm = next(d for d, _ in sent(a) if d[0] == MSG_HANDSHAKE_CONFIRM)
    b.node.receive_datagram(confirm, confirm_from, NOW)
    for data, _dst in sent(b):  # B's acknowledgement makes A's keys current
        a.node.receive_datagram(data, PUB_B, NOW)
    ka, kb = a.node.session(B), b.node.session(A)
    assert ka is not None and kb is not None
    assert (ka.tx_key, ka.local_index) == (kb.rx_key, kb.remote_index)


@pytest.mark.parametrize("introduced", [False, True], ids=["bare", "introduced"])
def test_a_captured_init_replayed_from_a_stranger_gets_nothing(introduced: bool) -> None:
    """Before the CONFIRM, M replays A's INIT from its own addresses (UDP, TCP, another relay
    channel, the relay over TLS): no datagram back, each counted; A's resends are all left."""
    a, b, init = pending(introduced=introduced)
    for src in STRANGERS:
        b.node.receive_datagram(init, src, NOW)
        assert sent(b) == [], src
    assert b.node.counters().get("init_resend_foreign") == len(STRANGERS)
    # the strangers used up none of A's resends, and A's handshake completes
    got: list[bytes] = []
    for _ in range(MAX_RESPONSE_RESENDS):
        b.node.receive_datagram(init, PUB_A, NOW)
        [(resp, dst)] = answers(b)
        assert dst == PUB_A
        got.append(resp)
    b.node.receive_datagram(init, PUB_A, NOW)
    assert sent(b) == []  # the resends are spent
    complete(a, b, got[-1], confirm_from=PUB_A)


def test_the_initiators_other_sources_get_the_response() -> None:
    """An introduced responder answers the same INIT at every source plausibly the
    initiator's: its other candidates (LAN, IPv6), its public IP on an unknown port (symmetric
    NAT) or over TCP, the relay channel; the handshake completes over the peer-reflexive one."""
    a, b, init = pending(introduced=True)
    last = b""
    for src in (LAN_A, V6_A, NAT_A, PathAddr(Transport.TCP, PUB_A.host, 51820), RELAY_TO_A,
                NAT_A):
        b.node.receive_datagram(init, src, NOW)
        [(last, dst)] = answers(b)
        assert dst == src
    assert "init_resend_foreign" not in b.node.counters()
    complete(a, b, last, confirm_from=NAT_A)
    assert b.node.peer_addr(A) == NAT_A


def test_a_bare_responder_answers_the_first_sources_ip_on_any_port() -> None:
    """Without A's introduction B knows only where the first INIT came from: that IP, any
    port (the initiator's NAT may map each destination to a new port)."""
    a, b, init = pending(introduced=False)
    b.node.receive_datagram(init, LAN_A, NOW)  # unknown to a bare B: foreign
    assert sent(b) == [] and b.node.counters().get("init_resend_foreign") == 1
    b.node.receive_datagram(init, NAT_A, NOW)
    [(resp, dst)] = answers(b)
    assert dst == NAT_A
    complete(a, b, resp, confirm_from=NAT_A)


def test_a_punched_handshake_completes_on_the_resend_to_a_symmetric_nat_mapping() -> None:
    """Relay first, A behind a symmetric NAT (its mapping towards B has a port B never heard
    of): A's INIT reaches B over the relay first, and B's RESPONSEs over the relay are lost;
    the same INIT punched directly arrives from A's public IP on the unknown port, and the
    cached RESPONSE sent there is what completes the handshake."""
    r, a, b = relay_first_pair(11)
    a.nat_source = NAT_A
    r.add_addr(a, NAT_A)  # what reaches the mapping reaches A
    r.drop_filter = lambda data, sender, dst: (
        sender == B and dst == RELAY_TO_A and data[0] == MSG_HANDSHAKE_RESPONSE)
    assert r.run_until(lambda: a.node.session(B) is not None and b.node.session(A) is not None,
                       4)
    to_a = [dst for _t, s, dst, d in r.log if s == B and d[0] == MSG_HANDSHAKE_RESPONSE]
    assert to_a[0] == RELAY_TO_A and NAT_A in to_a  # answered over the relay, then resent
    assert "init_resend_foreign" not in b.node.counters()
