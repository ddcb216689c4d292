"""Per-peer state of a Node (enclave/proto/node.py): the peer table's rows (their only
behaviour: heard() and moved() keep the liveness times and the path watch in step).

    PeerState   one peer: identity (set only after an authenticated handshake), paths, the
                handshakes in flight, up to three keysets (pending / current / previous),
                liveness times and the last PeerKeysUpdated published for it
    Closing     the keys of a closed session, kept only to resend its CLOSE
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from enclave.discovery.candidates import Candidate
from enclave.discovery.paths import PathManager
from enclave.proto import timing as T
from enclave.proto.cookie import CookieJar
from enclave.proto.events import PeerKeysUpdated
from enclave.proto.handshake import InitiatorHandshake, PeerIdentity, ResponderHandshake
from enclave.proto.session import Keyset
from enclave.proto.upkeep import PathWatch
from enclave.proto.wire import CloseReason

Addr = Hashable


@dataclass
class Closing:
    keys: Keyset
    addr: Addr
    reason: CloseReason
    sends_left: int
    next_send: float


class PeerState:
    def __init__(self, name: str) -> None:
        self.name = name
        self.identity: PeerIdentity | None = None
        self.cert: bytes | None = None
        self.addr: Addr | None = None
        self.paths: PathManager | None = None
        self.wanted = False  # we called connect(): keep trying
        self.peer_key: bytes | None = None  # its certified public key: our INITs' MAC1 key
        self.cookies = CookieJar()  # its cookies (it was under load), by address
        self.relay_reported = False
        self.candidates: tuple[Candidate, ...] = ()  # as connect() got them (reconnects)
        # outgoing handshake
        self.outbound: InitiatorHandshake | None = None
        self.out_sent_to: set[Addr] = set()  # where its INIT went: the only sources a
        # COOKIE_REPLY for it may come from (else a forged reply aims our INIT anywhere)
        self.out_attempts = 0
        self.out_next: float | None = None
        # incoming handshake (after its INIT was validated)
        self.inbound: ResponderHandshake | None = None
        self.in_addr: Addr | None = None  # where the answered INIT came from
        self.in_deadline = 0.0
        self.in_resends = 0
        # keysets
        self.pending: Keyset | None = None
        self.current: Keyset | None = None
        self.previous: Keyset | None = None
        self.previous_until = 0.0
        self.established = False
        self.established_at = 0.0
        # liveness
        self.last_rx = 0.0  # anything authentic heard, over any path (dead-peer detection)
        self.path_rx = 0.0  # ... over the current path (its path watch)
        self.last_tx = 0.0
        self.keepalive_after = T.KEEPALIVE_MIN
        self.last_ping = float("-inf")
        self.watch = PathWatch()  # is the current path alive (fails over when not)
        self.failing = False  # the current path stopped answering: leave it for any other
        self.snapshot: PeerKeysUpdated | None = None

    def heard(self, now: float, addr: Addr | None = None) -> None:
        """Something authentic from the peer over `addr` (None: over the fast path, which uses
        the current path).  Only what came over the current path keeps the path watch quiet: a
        peer that moved to a relay and probes us there says nothing of our path to it."""
        self.last_rx = now
        if addr is None or addr == self.addr:
            self.path_rx = now

    def moved(self, addr: Addr, now: float) -> None:
        """The session's path is `addr` from now on (a roam, or a switch after a probe reply
        over it): heard there now, the path watch starts over, a failure is behind it."""
        self.addr = addr
        self.path_rx = now
        self.failing = False
        self.watch.reset()

    def keysets(self) -> list[Keyset]:
        return [k for k in (self.current, self.pending, self.previous) if k is not None]
