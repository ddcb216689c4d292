"""Roaming through the fast path (Node.peer_roamed) and the Node's silent-drop counters.

    A (NAT rebinds 198.18.1.1:51820 -> :40000) ----DATA----> B's "fast path" (emulated here)
                                                                  | newest authentic DATA from a
                                                                  v new address: ROAMED punt
                                                  B.node.peer_roamed(local_index, addr, now)

The compiled data plane decrypts DATA itself and moves its own send address; the Node must follow
(else its next key update resets the data plane to the old address, and its CONTROL packets go
there).  The emulated fast path takes DATA addressed to B away from B's Node and reports the
roam, as enclave.agent.wiring does with PUNT_ROAMED.
"""

from __future__ import annotations

from enclave.proto import timing as T
from enclave.proto.events import PeerKeysUpdated, PeerRoamed
from enclave.proto.wire import MSG_CONTROL, MSG_DATA, unpack_transport_header
from tests.support.peers import A, B, connect, pair
from tests.support.router import Host, Router, events_of, udp


def fast_path_for(r: Router, b: Host) -> list[tuple[int, object]]:
    """DATA to b bypasses b's Node; each packet is reported like a ROAMED punt when it comes
    from an address other than the one the emulated data plane sends to."""
    reports: list[tuple[int, object]] = []
    dp_addr: dict[str, object] = {}

    def take(data: bytes, sender: str, dst: object) -> bool:
        if data[0] != MSG_DATA or sender == b.name or dst not in b.addrs:
            return False
        src = r.source_for(r.hosts[sender], dst)  # type: ignore[arg-type]
        index = unpack_transport_header(data).receiver
        if dp_addr.get(sender, b.node.peer_addr(sender)) != src:
            dp_addr[sender] = src
            reports.append((index, src))
            b.node.peer_roamed(index, src, r.now)
        return True  # the fast path consumed it

    r.drop_filter = take
    return reports


def test_peer_roamed_moves_the_session_and_later_key_updates_keep_it() -> None:
    _pki, r, a, b = pair()
    connect(r, a, b)
    old, new = udp("198.18.1.1"), udp("198.18.1.1", 40000)
    assert b.node.peer_addr(A) == old
    reports = fast_path_for(r, b)
    r.add_addr(a, new)
    a.nat_source = new  # A's NAT rebinds; A keeps sending DATA only (no CONTROL yet)
    mark = len(r.log)
    assert a.node.send_data(B, b"frame", r.now)
    r.run(0.05)
    assert [d[0] for _t, s, _dst, d in r.log[mark:] if s == A] == [MSG_DATA]  # no CONTROL
    assert len(reports) == 1 and reports[0][1] == new
    assert b.node.peer_addr(A) == new
    assert events_of(b, PeerRoamed)[-1].addr == new
    roam_keys = events_of(b, PeerKeysUpdated)[-1]
    assert roam_keys.addr == new and roam_keys.tx is not None  # the data plane is told too
    # B's own packets (keepalives, the rekey handshake) now go to the new address, and the
    # rekey's key update carries it instead of the old one
    sent_at = len(r.log)
    r.run(T.REKEY_AFTER_TIME + T.REKEY_RESPONDER_LAG + 5)
    from_b = [(dst, d[0]) for _t, s, dst, d in r.log[sent_at:] if s == B]
    assert from_b and all(dst == new for dst, _k in from_b), from_b[:5]
    assert any(k == MSG_CONTROL for _d, k in from_b)
    later = [e for e in events_of(b, PeerKeysUpdated) if e.tx is not None]
    assert later[-1].tx is not None and later[-1].tx.tx_key != roam_keys.tx.tx_key  # rekeyed
    assert later[-1].addr == new
    assert b.node.session(A) is not None and a.node.session(B) is not None


def test_peer_roamed_ignores_unknown_stale_and_same_address() -> None:
    _pki, r, a, b = pair()
    connect(r, a, b)
    cur = b.node.session(A)
    assert cur is not None
    before = len(b.events)
    b.node.peer_roamed(cur.local_index, udp("198.18.1.1"), r.now)  # where it already is
    assert b.node.peer_roamed(cur.local_index ^ 0x5A5A5A5A, udp("198.51.100.9"), r.now) is False
    r.run(0.01)
    assert not any(isinstance(e, PeerRoamed) for e in b.events[before:])
    assert b.node.peer_addr(A) == udp("198.18.1.1")
    assert b.node.counters().get("roamed_unknown_index") == 1
    # after a rekey the old key is `previous`: a late packet on it must not move the session
    r.run(T.REKEY_AFTER_TIME + T.REKEY_RESPONDER_LAG + 5)
    new_cur = b.node.session(A)
    assert new_cur is not None and new_cur.local_index != cur.local_index
    moved = b.node.peer_roamed(cur.local_index, udp("198.51.100.9"), r.now)
    assert moved is False and b.node.peer_addr(A) == udp("198.18.1.1")
    assert b.node.counters().get("roamed_stale_keys", 0) + b.node.counters().get(
        "roamed_unknown_index", 0) == 2
    # and the current key does move it
    assert b.node.peer_roamed(new_cur.local_index, udp("198.51.100.9"), r.now) is True
    assert b.node.peer_addr(A) == udp("198.51.100.9")
