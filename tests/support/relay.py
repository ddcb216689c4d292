"""The relay core and two relay clients wired together in memory (unix time in ``now``).

    p = Pair(); p.register_both()          X and Y registered with tickets naming each other
    p.send(p.x, "Y", b"hi", X_ADDR)        X's message through the core; p.got["Y"] has it
    ticket("XXXXX", "YYYYY", ttl=30)       a ticket minted with KEY, ending NOW + ttl

A RelayClient against a real relay over a UDP socket:

    register_over(sock, RelayClient(), peer, relay, ticket)   our channel, or None on silence
"""

from __future__ import annotations

import socket
import time

from enclave.agent.relay_client import RelayClient
from enclave.discovery import PathAddr, Transport
from enclave.platform.relay import RelayCore, mint_ticket

KEY = bytes(range(32))
NOW = 1_800_000_000.0
RELAY = ("198.18.0.11", 3479)
X_ADDR, Y_ADDR, EVE = ("198.18.1.1", 40000), ("198.18.2.1", 40001), ("198.18.9.9", 5555)


def ticket(src: str, dst: str, *, key: bytes = KEY, ttl: int = 600) -> bytes:
    return mint_ticket(key, src, dst, int(NOW) + ttl)


class Pair:
    """Relay core with clients X and Y; `deliver` moves datagrams, `now` is unix time."""

    def __init__(self) -> None:
        self.core = RelayCore(KEY, cookie_secret=b"c" * 32)
        self.x, self.y = RelayClient(), RelayClient()
        self.now = NOW
        self.got: dict[str, list[tuple[PathAddr, bytes]]] = {"X": [], "Y": []}
        self.registered: set[str] = set()
        self.where = {X_ADDR: "X", Y_ADDR: "Y"}  # agent address -> agent

    def to_relay(self, out: list[tuple[bytes, tuple[str, int]]], src: tuple[str, int]) -> None:
        for data, dst in out:
            assert dst == RELAY
            for reply, to in self.core.receive(data, src, self.now):
                assert len(reply) <= len(data)  # never amplifies
                who = self.where[to]
                client = self.x if who == "X" else self.y
                r = client.receive(reply, RELAY, self.now)
                assert r is not None
                if r.kind == "data":
                    assert r.path is not None
                    self.got[who].append((r.path, r.message))
                elif r.kind == "registered":
                    self.registered.add(who)
                elif r.kind == "send":
                    self.to_relay(r.send, to)

    def register_both(self, ttl: int = 600) -> None:
        """X and Y register with each other's tickets (ending `ttl` s after NOW)."""
        self.to_relay(self.x.add("Y", RELAY, ticket("XXXXX", "YYYYY", ttl=ttl), self.now), X_ADDR)
        self.to_relay(self.y.add("X", RELAY, ticket("YYYYY", "XXXXX", ttl=ttl), self.now), Y_ADDR)

    def send(self, client: RelayClient, peer: str, msg: bytes, src: tuple[str, int]) -> None:
        path = client.path_for(peer)
        assert path is not None and path.transport is Transport.RELAY
        wrapped = client.wrap(msg, path)
        assert wrapped is not None
        self.to_relay([wrapped], src)


def register_over(sock: socket.socket, rc: RelayClient, peer: str, relay: tuple[str, int],
                  ticket: bytes, tries: int = 10) -> int | None:
    """REGISTER `peer`'s channel with a real relay over `sock` (a timeout set), answering the
    cookie challenge and sending REGISTER again after a read times out, until REGISTERED:
    our channel number there; None when no REGISTERED came within `tries` reads."""
    out = rc.add(peer, relay, ticket, time.time())
    for _ in range(tries):
        for data, dst in out:
            sock.sendto(data, dst)
        try:
            data, src = sock.recvfrom(2048)
        except TimeoutError:
            out = rc.add(peer, relay, ticket, time.time())
            continue
        got = rc.receive(data, src, time.time())
        if got is not None and got.kind in ("registered", "refreshed"):
            path = rc.path_for(peer)
            route = None if path is None else rc.route(path)
            assert route is not None
            return route[1]
        out = got.send if got is not None else []
    return None
