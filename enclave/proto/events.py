"""Events a Node reports (`Node.next_event()`); small frozen dataclasses."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from enclave.proto.handshake import PeerIdentity
from enclave.proto.wire import Cipher, CloseReason


@dataclass(frozen=True)
class SessionKeys:
    """One key pair as the fast path needs it.  Counters start at 0 for DATA."""

    local_index: int  # receiver index in DATA packets sent to us
    remote_index: int  # receiver index we put in DATA packets we send
    rx_key: bytes
    tx_key: bytes
    cipher: Cipher
    created: float  # `now` of the handshake that made them

    def __repr__(self) -> str:  # keys never reach logs
        return (
            f"SessionKeys(local_index={self.local_index:#010x}, "
            f"remote_index={self.remote_index:#010x}, cipher={self.cipher.name}, "
            f"created={self.created})"
        )


@dataclass(frozen=True)
class PeerKeysUpdated:
    """Complete key state of one peer for the fast path: replace whatever it had.

    `tx` is None while no key may be used for sending; `rx` lists every local index that may
    receive (current, previous during the overlap, and freshly derived keys awaiting use).
    """

    peer: str
    addr: Hashable | None
    tx: SessionKeys | None
    rx: tuple[SessionKeys, ...]


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
    """No direct path within the give-up time: the agent should add a relay candidate."""

    peer: str


@dataclass(frozen=True)
class PingAnswered:
    """The PONG to our `Node.send_ping`: round-trip time (s) and the path the PING went out on."""

    peer: str
    ping_id: int
    rtt: float
    addr: Hashable


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
    | PingAnswered
    | DataReceived
)
