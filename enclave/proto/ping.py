"""Outstanding operator pings of one node (`enclave ping`), sans-I/O.

    Node.send_ping(peer, now) --start(peer, addr, now)--> id   -> PING(id) in the session
    PONG(id) authenticated from peer --answer(peer, id, addr, now)--> PingAnswered(rtt) | None

At most MAX_OUTSTANDING pings are remembered (the oldest is forgotten first), each for at most
PING_LIFETIME seconds; a PONG whose id is not outstanding for that very peer (late, replayed into
a new session, or sent by another peer) answers nothing.  Ids are random u64 values from the
caller's generator, so a restarted agent does not match an old PONG.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from enclave.proto.events import PingAnswered

MAX_OUTSTANDING = 64
PING_LIFETIME = 30.0  # seconds


@dataclass(frozen=True)
class _Sent:
    peer: str
    addr: Hashable
    sent: float


class PingTracker:
    def __init__(
        self,
        new_id: Callable[[], int],
        *,
        max_outstanding: int = MAX_OUTSTANDING,
        lifetime: float = PING_LIFETIME,
    ) -> None:
        if max_outstanding < 1 or lifetime <= 0:
            raise ValueError("need room for one ping and a positive lifetime")
        self._new_id = new_id
        self._max = max_outstanding
        self._lifetime = lifetime
        self._sent: OrderedDict[int, _Sent] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        return len(self._sent)

    def start(self, peer: str, addr: Hashable, now: float) -> int:
        """Remember a ping to `peer` sent on `addr` now; returns its (fresh, non-zero) id."""
        self.expire(now)
        ping_id = self._new_id()
        while ping_id == 0 or ping_id in self._sent:
            ping_id = self._new_id()
        self._sent[ping_id] = _Sent(peer, addr, now)
        while len(self._sent) > self._max:
            self._sent.popitem(last=False)
        return ping_id

    def answer(self, peer: str, ping_id: int, now: float) -> PingAnswered | None:
        """A PONG from `peer`: the matching ping (forgotten from now on) or None."""
        self.expire(now)
        sent = self._sent.get(ping_id)
        if sent is None or sent.peer != peer:
            return None
        del self._sent[ping_id]
        return PingAnswered(peer, ping_id, max(0.0, now - sent.sent), sent.addr)

    def forget_peer(self, peer: str) -> None:
        """The session with `peer` ended: its pings will never be answered."""
        for ping_id in [i for i, s in self._sent.items() if s.peer == peer]:
            del self._sent[ping_id]

    def expire(self, now: float) -> None:
        while self._sent:
            ping_id, sent = next(iter(self._sent.items()))
            if now - sent.sent <= self._lifetime:
                break
            del self._sent[ping_id]
