"""Two hosts on the in-memory router (tests.support.router) with a direct path and a relay, as a
pair starts since relay-first: both connect over the direct path and offer the relay channel at
once.

    A 198.18.1.1 (PUB_A) <---- direct UDP (DIRECT: block it with r.blocked |= DIRECT) ----> B
    A ---- relay 198.18.9.9, channels 1 (RELAY_TO_A) / 2 (RELAY_TO_B) ---- B
"""

from __future__ import annotations

from enclave.discovery import Candidate, CandidateKind, PathAddr, Transport
from tests.support.router import Host, Router, make_host, sim_pki, udp

A, B = "AAAAA", "BBBBB"
PUB_A, PUB_B = udp("198.18.1.1"), udp("198.18.2.2")
RELAY_TO_B = PathAddr(Transport.RELAY, "198.18.9.9", 2)
RELAY_TO_A = PathAddr(Transport.RELAY, "198.18.9.9", 1)
DIRECT = {(A, PUB_B), (B, PUB_A)}


def relay_first_pair(seed: int, *, direct_open: bool = True) -> tuple[Router, Host, Host]:
    """A (host seed `seed`) and B (`seed + 1`) connecting, punching at now + 0.5 s, with both
    relay channels offered; the direct path blocked both ways unless `direct_open`. Nothing has
    run yet."""
    pki = sim_pki()
    r = Router()
    a = r.add(make_host(pki, A, [PUB_A], intents={B}, seed=seed))
    b = r.add(make_host(pki, B, [PUB_B], intents={A}, seed=seed + 1))
    a.nat_source, b.nat_source = PUB_A, PUB_B
    r.add_addr(b, RELAY_TO_B)
    r.add_addr(a, RELAY_TO_A)
    if not direct_open:
        r.blocked |= DIRECT
    at = r.now + 0.5
    a.node.connect(B, [Candidate(PUB_B, CandidateKind.PUBLIC)], r.now, punch_at=at,
                   peer_key=b.public_key)
    b.node.connect(A, [Candidate(PUB_A, CandidateKind.PUBLIC)], r.now, punch_at=at,
                   peer_key=a.public_key)
    # relay first: the agent registers with the introduction and offers the channel at once
    a.node.add_candidate(B, Candidate(RELAY_TO_B, CandidateKind.RELAY), r.now)
    b.node.add_candidate(A, Candidate(RELAY_TO_A, CandidateKind.RELAY), r.now)
    return r, a, b
