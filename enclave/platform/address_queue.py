"""Connections over the per-address cap wait for a place of their own address instead of being
closed: a few hundred agents behind one NAT address that fail over at once are served in turn,
each at its first attempt, instead of being refused and coming back after a backoff.

    QueueingSite accept loop -> GuardedSocket.accept(): ConnectionLimits.admit says PER_ADDRESS
        | AddressQueue.hold(conn, host): accepted, untouched (no TLS, nothing read), FIFO per
        |   source key; at most `per_address` of one key and `total` in all, each for at most
        |   `timeout` seconds; beyond: refused (closed, counted, one bounded log line) as before
        v
    a connection of that address authenticates or closes -> ConnectionLimits.on_room -> wake()
        | (coalesced: one pass per loop iteration) the oldest held connection of each address
        | with room is counted (ConnectionLimits.admit) -- one whose client has gone is closed
        v   unanswered (abandoned)
    `serve(conn)`: the site's TLS handshake

A held connection costs the node one file descriptor (ConnectionLimits.held counts it in the
total, which stays below the file limit) and no CPU. It does not count against the caps of
unauthenticated connections, so what one address holds never keeps another address out; one
that leaves without a place (timed out, abandoned) gives its place in the total back
(ConnectionLimits.room_freed: the accept loop may be waiting for it).
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from enclave.platform.frontdoor import PER_ADDRESS, GuardedSocket, source_key

TCP_ESTABLISHED = 1  # tcp_info.tcpi_state (linux/tcp_states.h)


def abandoned(conn: socket.socket) -> bool:
    """The client gave up while its connection waited (its FIN or RST has come: the socket is
    no longer ESTABLISHED): no TLS handshake is worth doing for it."""
    try:
        info = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)
    except OSError:
        return True
    return info[0] != TCP_ESTABLISHED



@dataclass(slots=True, eq=False)
class _Held:
    conn: socket.socket
    host: str
    timer: asyncio.TimerHandle | None = None


class AddressQueue:
    """Connections of each source address waiting for a place of that address (see above)."""

    def __init__(self, sock: GuardedSocket, serve: Callable[[socket.socket], None], *,
                 per_address: int, total: int, timeout: float) -> None:
        self._sock = sock
        self._serve = serve
        self._per_address = per_address
        self._total = total
        self._timeout = timeout
        self._held: dict[str, deque[_Held]] = {}
        self._count = 0
        self._scheduled = False
        self.abandoned = 0  # held connections whose client gave up (closed unanswered)
        self.served = 0  # held connections that got their place

    def __len__(self) -> int:
        return self._count

    def hold(self, conn: socket.socket, host: str) -> bool:
        """Keep ``conn`` (refused by the per-address cap) until its address has room; False
        when there is no room to hold it either (the caller refuses it)."""
        key = source_key(host)
        waiting = self._held.get(key)
        if self._count >= self._total or (waiting is not None
                                          and len(waiting) >= self._per_address):
            return False
        entry = _Held(conn, host)
        entry.timer = asyncio.get_running_loop().call_later(self._timeout, self._expire,
                                                            key, entry)
        self._held.setdefault(key, deque()).append(entry)
        self._count += 1
        self._sock.limits.held += 1
        self._sock.limits.held_from[key] += 1
        return True

    def wake(self) -> None:
        """A place may have freed (ConnectionLimits.on_room): look at the held ones soon."""
        if self._held and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._release_due)

    def close(self) -> None:
        """Close every held connection (the site stops)."""
        for key in list(self._held):
            for entry in list(self._held[key]):
                self._drop(key, entry)
                entry.conn.close()

    def _release_due(self) -> None:
        self._scheduled = False
        limits = self._sock.limits
        for key in list(self._held):
            waiting = self._held[key]
            while waiting and limits.has_room_for(key):
                entry = waiting[0]
                self._drop(key, entry)
                if abandoned(entry.conn):
                    self.abandoned += 1
                    entry.conn.close()
                    limits.room_freed()
                    continue
                if limits.admit(entry.conn.fileno(), entry.host,
                                held=True) is not None:  # cannot happen
                    self._sock.refuse(entry.conn, entry.host, PER_ADDRESS)
                    continue
                self._sock.counted(entry.conn)
                self.served += 1
                self._serve(entry.conn)

    def _expire(self, key: str, entry: _Held) -> None:
        """Held for ``timeout`` without a place: refused after all."""
        entry.timer = None
        self._drop(key, entry)
        self._sock.limits.refused[PER_ADDRESS] += 1
        self._sock.refuse(entry.conn, entry.host, PER_ADDRESS)
        self._sock.limits.room_freed()

    def _drop(self, key: str, entry: _Held) -> None:
        waiting = self._held.get(key)
        if waiting is None or entry not in waiting:
            return
        waiting.remove(entry)
        if not waiting:
            del self._held[key]
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        self._count -= 1
        limits = self._sock.limits
        limits.held -= 1
        limits.held_from[key] -= 1
        if limits.held_from[key] <= 0:
            del limits.held_from[key]
