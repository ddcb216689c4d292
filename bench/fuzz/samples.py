"""Real protocol messages for the fuzz targets: seeds, and bases for structure-aware mutation.

Two in-memory hosts (tests.support.peers: A and B with certificates from a real CA on the
simulated clock) connect; every datagram they exchange is kept by type.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from enclave.proto.cookie import CookieChecker
from enclave.proto.wire import MSG_HANDSHAKE_INIT
from tests.support.peers import ADDR_A, connected_pair
from tests.support.pki import Pki
from tests.support.router import Host, Router


@dataclass
class Exchange:
    pki: Pki
    router: Router
    a: Host
    b: Host
    by_type: dict[int, list[bytes]]  # message type byte -> datagrams seen on the wire
    cookie_reply: bytes  # what B sends A's INIT under load

    def first(self, msg_type: int) -> bytes:
        return self.by_type[msg_type][0]

    def all(self) -> list[bytes]:
        return [m for ms in self.by_type.values() for m in ms]


def exchange(seconds: float = 1.0) -> Exchange:
    """A and B connected, then `seconds` of keepalive traffic; the datagrams by type."""
    pki, r, a, b = connected_pair()
    for i in range(4):
        a.node.send_data(b.name, bytes(range(60 + i)), r.now)  # DATA through the Node
    r.run(seconds)
    by_type: dict[int, list[bytes]] = defaultdict(list)
    for _t, _sender, _dst, data in r.log:
        if len(by_type[data[0]]) < 8:
            by_type[data[0]].append(data)
    r.log.clear()
    init = by_type[MSG_HANDSHAKE_INIT][0]
    checker = CookieChecker(b.public_key, lambda n: bytes(range(n)))
    cookie_reply = checker.reply(init, repr(ADDR_A).encode(), r.now)
    return Exchange(pki, r, a, b, dict(by_type), cookie_reply)
