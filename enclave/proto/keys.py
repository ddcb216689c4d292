"""SessionKeys: one key pair of a session, in the one shape every later stop uses.

Born in the handshake machine (proto/handshake.py, inside HandshakeResult) once the peer is
authenticated; the Node's Keyset holds it, PeerKeysUpdated carries it, and the compiled data
plane's install reads its fields as they are:

    handshake ──SessionKeys──> Keyset.keys ──PeerKeysUpdated.tx / .rx──> DataPlane.apply
                                                                         └─> _fastpath install

`cipher` is the wire.Cipher the handshake chose; its value is the compiled fast path's AEAD
kind, so it is never renamed on the way.
"""

from __future__ import annotations

from dataclasses import dataclass

from enclave.proto.wire import Cipher


@dataclass(frozen=True)
class SessionKeys:
    """One key pair.  Counters start at 0 for DATA and CONTROL (disjoint nonce domains)."""

    local_index: int  # receiver index in DATA packets sent to us
    remote_index: int  # receiver index we put in DATA packets we send
    rx_key: bytes
    tx_key: bytes
    cipher: Cipher

    def __repr__(self) -> str:  # keys never reach logs
        return (
            f"SessionKeys(local_index={self.local_index:#010x}, "
            f"remote_index={self.remote_index:#010x}, cipher={self.cipher.name})"
        )
