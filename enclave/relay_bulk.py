"""Bulk datagrams in a relay batch: what a congested relay over TLS may drop (sans-I/O).

    batch = (u16 big-endian length | datagram)*      (enclave.proto.relay_batch)
    bulk  = a DATA datagram (type MSG_DATA) longer than an encrypted sparse-lane frame

An inner TCP stream through the relay over TLS never sees loss on its own (the outer TLS
connection is reliable), so a standing queue there is drained by dropping bulk datagrams: the
inner stream backs off.  Small datagrams (ACKs, pings: the data plane's sparse lane, frames up
to AQM_SPARSE_FRAME bytes) and every non-DATA message (handshakes, keepalives) always go.  The
agent's send queue drops as CoDel says (enclave.agent.relay_tls_aqm), the platform's relay when
a receiver's buffer stands (enclave.platform.relay_ws).
"""

from __future__ import annotations

from collections.abc import Callable

from enclave import _fastpath as fp
from enclave.proto.relay_batch import FRAME_PREFIX, frame_spans
from enclave.proto.wire import MAX_DATA_OVERHEAD, MSG_DATA

BULK_MIN = fp.AQM_SPARSE_FRAME + MAX_DATA_OVERHEAD + 1  # a datagram this long is bulk


def is_bulk(msg: bytes | memoryview) -> bool:
    """A datagram a congested relay may drop: DATA carrying more than a sparse-lane frame."""
    return len(msg) >= BULK_MIN and msg[0] == MSG_DATA


def drop_bulk(batch: bytes | memoryview, drop: Callable[[], bool]
              ) -> tuple[list[memoryview], int, int]:
    """Walk a well-framed batch; every bulk datagram for which drop() says True is left out.
    Returns (the kept frames, prefixes included, as views into `batch`; how many kept that
    are not bulk; how many dropped).  A truncated tail is left out too; a zero length inside
    is kept (as a frame that is not bulk)."""
    kept: list[memoryview] = []
    small = dropped = 0
    view = memoryview(batch)
    for start, stop in frame_spans(view):
        if not is_bulk(view[start:stop]):
            small += 1
        elif drop():
            dropped += 1
            continue
        kept.append(view[start - FRAME_PREFIX:stop])
    return kept, small, dropped


def codel_drop_bulk(batch: bytes | memoryview, codel: fp.CoDel, sojourn_ns: int, now_ns: int
                    ) -> tuple[list[memoryview], int, int]:
    """drop_bulk with CoDel deciding: each bulk datagram is one packet leaving a queue in
    which it stood sojourn_ns (codel.step, RFC 8289), at now_ns.  The agent's send queue
    (enclave.agent.relay_tls_aqm) and the platform's relay for a receiver whose queue stands
    (enclave.platform.relay_ws) both drop this way."""
    return drop_bulk(batch, lambda: codel.step(sojourn_ns, now_ns))
