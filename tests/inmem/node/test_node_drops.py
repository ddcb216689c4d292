"""The Node counts what it drops silently (Node.counters(): reason -> packets); the wire stays
silent, the operator sees the numbers in `enclave status --json` (node_drops)."""

from __future__ import annotations

import os

from enclave.proto.wire import MSG_DATA, pack_transport_header
from tests.support.peers import ADDR_M, B, capture_init, connected_pair, silent, victim_b
from tests.support.router import sim_pki


def test_drops_on_a_connected_node_are_counted_by_reason() -> None:
    _pki, r, a, b = connected_pair()
    assert b.node.counters() == {}
    a.node.send_data(B, b"once", r.now)
    r.run(0.1)
    pkt = next(d for _t, s, _d, d in reversed(r.log) if s == a.name and d[0] == MSG_DATA)
    cur = b.node.session(a.name)
    assert cur is not None
    b.events.clear()
    cases = [
        (b"", "malformed"),
        (b"\x04\x00\x00", "malformed"),
        (bytes([0x7F, 0, 0, 0]) + os.urandom(40), "unknown_type"),
        # DATA on an index nobody holds (what the fast path punts): 16-byte header + junk
        (pack_transport_header(MSG_DATA, cur.local_index ^ 1, 5) + os.urandom(40),
         "data_unknown_index"),
        (pkt, "replayed_or_forged"),  # a replay of the packet b accepted
        (pkt[:-1] + bytes([pkt[-1] ^ 1]), "replayed_or_forged"),  # forged tag
    ]
    for data, reason in cases:
        before = b.node.counters().get(reason, 0)
        silent(r, b, data, src=ADDR_M)
        assert b.node.counters().get(reason, 0) == before + 1, (reason, b.node.counters())
    assert sum(b.node.counters().values()) == len(cases)


def test_init_drops_are_counted() -> None:
    pki = sim_pki()
    other = sim_pki("evil")
    r, b = victim_b(pki)
    silent(r, b, capture_init(other, "AAAAA", to_key=b.public_key))  # not our CA
    silent(r, b, capture_init(pki, "CCCCC", to_key=b.public_key))  # b has no intent for it
    assert b.node.counters() == {"init_invalid": 2}
    # a flood from one source hits the per-source rate limit before validation (and, once the
    # offered load is high, the cookie reply instead of any work)
    init = capture_init(pki, "CCCCC", to_key=b.public_key)
    for _ in range(100):
        r.inject(init, ADDR_M, b.addrs[0])
    r.run(1)
    got = b.node.counters()
    assert got.get("init_rate_limited", 0) > 0
    assert got["init_rate_limited"] + got["init_invalid"] + got.get("init_cookie_sent", 0) == 102

