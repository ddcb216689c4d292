"""Hosts on the in-memory router (tests.support.router) as the peer tests set them up.

    pki, r, a, b = pair()              A at 198.18.1.1 and B at 198.18.2.2, intending each other
    connect(r, a, b)                   A connects; both hold a session (simulated clock)
    pki, r, a, b = connected_pair()    the same, already connected (default router seed)
    r, b = victim_b(pki)               B alone, for packets a stranger M injects
    silent(r, b, data)                 B neither answers ``data`` nor keeps state for it
    capture_init(pki, name, to_key=k)  a real handshake INIT as it leaves host ``name`` (MAC1
                                       made with the victim's public key ``k``)
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave.discovery import Candidate, CandidateKind, PathAddr
from enclave.proto.events import DataReceived
from enclave.proto.wire import MSG_HANDSHAKE_INIT
from tests.support.pki import Pki
from tests.support.router import Host, Router, events_of, make_host, sim_pki, udp

A, B, M = "AAAAA", "BBBBB", "MMMMM"
KeyCert = tuple[Ed25519PrivateKey, bytes, int]  # what Pki.issue returns
ADDR_A, ADDR_B, ADDR_M = udp("198.18.1.1"), udp("198.18.2.2"), udp("198.18.3.3")


def pair(
    *, aes_a: bool = True, aes_b: bool = True, seed: int = 7
) -> tuple[Pki, Router, Host, Host]:
    pki = sim_pki()
    r = Router(seed=seed)
    a = r.add(make_host(pki, A, [udp("198.18.1.1")], intents={B}, aes=aes_a, seed=1))
    b = r.add(make_host(pki, B, [udp("198.18.2.2")], intents={A}, aes=aes_b, seed=2))
    return pki, r, a, b


def connected(a: Host, b: Host) -> bool:
    return a.node.session(b.name) is not None and b.node.session(a.name) is not None


def connect(r: Router, a: Host, b: Host, timeout: float = 10.0) -> None:
    a.node.connect(b.name, [Candidate(b.addrs[0], CandidateKind.PUBLIC)], r.now,
                   peer_key=b.public_key)
    assert r.run_until(lambda: connected(a, b), timeout)


def frames(h: Host) -> list[bytes]:
    return [e.frame for e in events_of(h, DataReceived)]


def silent(r: Router, victim: Host, data: bytes, src: PathAddr = ADDR_M) -> None:
    before = victim.node.state_size()
    r.log.clear()
    r.inject(data, src, victim.addrs[0])
    r.run(1)
    sent = [x for x in r.log if x[1] == victim.name]
    assert sent == [], f"victim answered: {sent[:1]}"
    assert victim.node.state_size() == before
    assert victim.events == []


def capture_init(pki: Pki, name: str, *, to_key: bytes, to: str = B,
                 key_cert: KeyCert | None = None) -> bytes:
    """A real INIT from host `name` (which intends `to`, whose public key is `to_key`: the
    introduction hands it over, MAC1 is made with it) as it leaves that host."""
    r = Router()
    m = r.add(make_host(pki, name, [ADDR_M], intents={to}, seed=5, key_cert=key_cert))
    m.node.connect(to, [Candidate(ADDR_B, CandidateKind.PUBLIC)], r.now, peer_key=to_key)
    m.node.handle_timer(r.now)
    out = m.node.datagrams_to_send(r.now)
    assert out and out[0][0][0] == MSG_HANDSHAKE_INIT
    return out[0][0]


def victim_b(pki: Pki) -> tuple[Router, Host]:
    r = Router()
    b = r.add(make_host(pki, B, [ADDR_B], intents={A}, seed=2))
    return r, b


def connected_pair() -> tuple[Pki, Router, Host, Host]:
    pki = sim_pki()
    r = Router()
    a = r.add(make_host(pki, A, [ADDR_A], intents={B}, seed=1))
    b = r.add(make_host(pki, B, [ADDR_B], intents={A}, seed=2))
    a.node.connect(B, [Candidate(ADDR_B, CandidateKind.PUBLIC)], r.now, peer_key=b.public_key)
    assert r.run_until(lambda: b.node.session(A) is not None and a.node.session(B) is not None, 5)
    return pki, r, a, b
