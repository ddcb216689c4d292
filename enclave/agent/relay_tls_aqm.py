"""CoDel on the agent's relay-over-TLS send queue: a standing queue drops bulk datagrams.

    send_frames(batch) -> queued with its time --(the link takes writes)--> SendAqm.admit
                                                 sojourn < TARGET: the batch as it is
                                                 standing (CoDel, RFC 8289): bulk DATA
                                                 datagrams dropped as the control law says,
                                                 small ones and all non-DATA kept

An inner TCP stream through the relay over TLS never sees loss on its own (the outer TLS
connection is reliable), so without this it fills every buffer on the way and the round trip of
everything else through the same connection (pings, ACKs, handshakes) grows with it.  CoDel
here is the compiled data plane's state machine (enclave._fastpath.CoDel, the one its TX queue
runs) with a TCP-over-a-path target (TARGET_NS, INTERVAL_NS).  Only bulk datagrams are dropped
(enclave.relay_bulk: DATA longer than an encrypted sparse-lane frame); ACKs, pings,
keepalives and handshakes always go.  A batch is walked (in Python) only while its sojourn is
above the target.
"""

from __future__ import annotations

from enclave import _fastpath as fp
from enclave.relay_bulk import codel_drop_bulk

TARGET_NS = 5_000_000  # 5 ms: sojourn above this for INTERVAL_NS starts dropping
INTERVAL_NS = 100_000_000


class SendAqm:
    """CoDel for one peer's queue of framed batches (u16 length | datagram)*; counts what it
    dropped (drops_codel) and the small datagrams it let by while the queue stood
    (kept_small)."""

    def __init__(self, target_ns: int = TARGET_NS, interval_ns: int = INTERVAL_NS) -> None:
        self._codel = fp.CoDel(target_ns, interval_ns)
        self._target = target_ns
        self.drops_codel = 0
        self.kept_small = 0

    @property
    def dropping(self) -> bool:
        return self._codel.dropping

    def admit(self, batch: bytes, count: int, sojourn_ns: int, now_ns: int
              ) -> tuple[bytes, int]:
        """The batch to write after `sojourn_ns` in the queue, and its datagram count (0: all
        dropped).  `batch` must be well framed (send_frames checked it)."""
        if sojourn_ns < self._target and not self._codel.dropping:
            self._codel.step(sojourn_ns, now_ns)  # below target: resets the episode
            return batch, count
        kept, small, dropped = codel_drop_bulk(batch, self._codel, sojourn_ns, now_ns)
        self.kept_small += small
        if not dropped:
            return batch, count
        self.drops_codel += dropped
        return b"".join(kept), count - dropped
