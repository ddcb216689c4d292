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
from enclave.proto.relay_batch import FRAME_PREFIX
from enclave.proto.wire import MAX_DATA_OVERHEAD, MSG_DATA

BULK_MIN = fp.AQM_SPARSE_FRAME + MAX_DATA_OVERHEAD + 1  # a datagram this long is bulk


def is_bulk(msg: bytes | memoryview) -> bool:
    """A datagram a congested relay may drop: DATA carrying more than a sparse-lane frame."""
    return len(msg) >= BULK_MIN and msg[0] == MSG_DATA


def drop_bulk(batch: bytes | memoryview, drop: Callable[[], bool]
              ) -> tuple[list[memoryview], int, int]:
    """Walk a well-framed batch; every bulk datagram for which drop() says True is left out.
    Returns (the kept frames, prefixes included, as views into `batch`; how many kept that
    are not bulk; how many dropped).  A truncated tail is left out too."""
    kept: list[memoryview] = []
    small = dropped = 0
    view = memoryview(batch)
    off, n = 0, len(view)
    while off + FRAME_PREFIX < n:
        end = off + FRAME_PREFIX + int.from_bytes(view[off:off + FRAME_PREFIX], "big")
        if end > n:
            break
        msg = view[off + FRAME_PREFIX:end]
        if not is_bulk(msg):
            small += 1
        elif drop():
            dropped += 1
            off = end
            continue
        kept.append(view[off:end])
        off = end
    return kept, small, dropped
