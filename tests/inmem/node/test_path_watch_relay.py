"""A direct path that dies while the peer already talks over the relay (two real Nodes on the
in-memory router, simulated clock) -- what `enclave bench`'s path moves stage found:

    A 198.18.1.1 <---- direct UDP, cut both ways ----> B 198.18.2.2
    A ---- relay (channels 1 / 2) ---- B

1. B's watch moves B to the relay first and its keepalive there moves A (a roam).  The direct
   path A left must answer afresh before A goes back: before, the reply to A's rtt probe over
   the relay made A switch straight back to the dead direct path (still "confirmed"), so A sat
   on direct-udp while nothing it sent arrived.
2. B is on the relay and probes A there; B's keepalive on the relay is lost.  A's path watch
   judges its own path only: B's probes over the relay say nothing about A's direct path.
   Before, they kept A's watch quiet (any authentic packet counted), so A never left the dead
   path while B probed at least every PATH_SUSPECT_AFTER.
"""

from __future__ import annotations

from enclave.discovery import PathAddr
from enclave.proto.events import PathChanged, PathFailed, PeerRoamed
from tests.support.relay_pair import (
    DIRECT,
    PUB_A,
    PUB_B,
    RELAY_TO_A,
    RELAY_TO_B,
    A,
    B,
    relay_first_pair,
)
from tests.support.router import Host, Router, events_of


def direct_pair(seed: int) -> tuple[Router, Host, Host]:
    """A pair up on the direct path with both relay channels offered (relay first)."""
    r, a, b = relay_first_pair(seed)
    assert r.run_until(lambda: a.node.peer_addr(B) == PUB_B and b.node.peer_addr(A) == PUB_A, 15)
    r.run(1.0)
    return r, a, b


def moves_of(h: Host) -> list[object]:
    return [e.addr for e in h.events if isinstance(e, (PeerRoamed, PathChanged))]


def test_a_side_moved_to_the_relay_by_its_peer_does_not_go_back_to_the_dead_path() -> None:
    r, a, b = direct_pair(31)
    before = len(moves_of(a))
    r.blocked |= DIRECT  # the direct path dies both ways
    for i in range(150):  # B sends (its watch fires first), A is idle
        b.node.send_data(A, b"b%d" % i, r.now)
        r.run(0.1)
        if a.node.peer_addr(B) == RELAY_TO_B:
            break
    assert a.node.peer_addr(B) == RELAY_TO_B and b.node.peer_addr(A) == RELAY_TO_A
    assert events_of(a, PathFailed) == []  # A was moved by B's keepalive, not by its own watch
    for i in range(100):  # 10 s more, the cut still on
        b.node.send_data(A, b"c%d" % i, r.now)
        r.run(0.1)
    assert PUB_B not in moves_of(a)[before:], moves_of(a)  # no flap back to the dead path
    assert a.node.peer_addr(B) == RELAY_TO_B


def test_the_peers_probes_over_the_relay_do_not_keep_a_dead_path_alive() -> None:
    r, a, b = direct_pair(41)
    lost: list[bytes] = []

    def keepalive_lost(data: bytes, sender: str, dst: PathAddr) -> bool:
        # B's first packet over the relay after it moved there (its keepalive) is lost
        if sender == B and dst == RELAY_TO_A == b.node.peer_addr(A) and not lost:
            lost.append(data)
            return True
        return False

    r.blocked |= DIRECT
    b.node.send_data(A, b"one", r.now)  # B sends once: its watch moves it to the relay
    r.drop_filter = keepalive_lost
    assert r.run_until(lambda: b.node.peer_addr(A) == RELAY_TO_A, 10)
    assert lost and a.node.peer_addr(B) == PUB_B  # A was not told: still on the dead path
    for i in range(200):  # A sends every 0.1 s; B probes A over the relay every second
        a.node.send_data(B, b"a%d" % i, r.now)
        if i % 10 == 0:
            assert b.node.ping(A, r.now)
        r.run(0.1)
        if a.node.peer_addr(B) == RELAY_TO_B:
            break
    assert [e.addr for e in events_of(a, PathFailed)] == [PUB_B]  # A's own watch saw it
    assert a.node.peer_addr(B) == RELAY_TO_B
