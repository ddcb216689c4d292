"""Events a Node reports (`Node.next_event()`); small frozen dataclasses."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from enclave.proto.handshake import PeerIdentity
from enclave.proto.keys import SessionKeys
from enclave.proto.wire import CloseReason


@dataclass(frozen=True)
class PeerKeysUpdated:
    """Everything the fast path needs about one peer: replace whatever it had.

    `tx` is None while no key may be used for sending; `rx` lists every local index that may
    receive (current, previous during the overlap, and freshly derived keys awaiting use).
    No keys at all (tx None, rx empty) means the peer is gone (DataPlane.apply removes it).
    `identity` is the peer's certified identity (MAC, overlay address, gateway routes) from
    the authenticated handshake whose keys these are; None only when there are no keys.
    """

    peer: str
    addr: Hashable | None
    tx: SessionKeys | None
    rx: tuple[SessionKeys, ...]
    identity: PeerIdentity | None = None


@dataclass(frozen=True)
class SessionEstablished:
    peer: str
    identity: PeerIdentity
    addr: Hashable
    initiator: bool


@dataclass(frozen=True)
class SessionRekeyed:
    peer: str
    local_index: int


@dataclass(frozen=True)
class SessionClosed:
    peer: str
    reason: CloseReason


@dataclass(frozen=True)
class HandshakeFailed:
    peer: str
    attempts: int


@dataclass(frozen=True)
class PeerRoamed:
    peer: str
    addr: Hashable


@dataclass(frozen=True)
class PathChanged:
    peer: str
    addr: Hashable
    rank: int


@dataclass(frozen=True)
class UseRelay:
    """The ordinary punch confirmed no direct path within the give-up time (the session may
    already run over the relay): the agent makes sure a relay candidate is offered."""

    peer: str


@dataclass(frozen=True)
class PathFailed:
    """The session's current path stopped answering (proto/upkeep.py PathWatch): the Node
    probes every other candidate and moves the session to the first that answers; the agent
    makes sure the relays (UDP and TLS) are offered."""

    peer: str
    addr: Hashable


@dataclass(frozen=True)
class PingAnswered:
    """The PONG to our `Node.send_ping`: round-trip time (s) and the path the PING went out on."""

    peer: str
    ping_id: int
    rtt: float
    addr: Hashable


@dataclass(frozen=True)
class Reconnecting:
    """A lost session (not closed locally) is being set up again (proto/upkeep.py)."""

    peer: str


@dataclass(frozen=True)
class DataReceived:
    """A DATA frame decrypted by the Python reference data path."""

    peer: str
    frame: bytes


Event = (
    PeerKeysUpdated
    | SessionEstablished
    | SessionRekeyed
    | SessionClosed
    | HandshakeFailed
    | PeerRoamed
    | PathChanged
    | UseRelay
    | PathFailed
    | Reconnecting
    | PingAnswered
    | DataReceived
)
