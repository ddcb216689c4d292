"""One key pair of a session (a "keyset"): keys, indices, counters, replay windows, age.

A peer's session holds up to three keysets:

    pending   derived by the initiator from the RESPONSE; receive-only until the responder's
              first authenticated packet on it proves the responder has it too
    current   used to send (and receive)
    previous  receive-only for KEY_OVERLAP seconds after a rekey, so packets in flight under
              the old keys are not lost

      initiator                                responder
      pending(K2) rx  <-- RESPONSE               (K1 current)
      CONFIRM -------------------------------->  K2 current (tx+rx), K1 previous
      K2 current, K1 previous  <-- first packet on K2 (keepalive ack)

Counters: DATA and CONTROL use disjoint nonce domains of the same key (wire.py), so the fast
path owns the DATA counter and Python owns the CONTROL counter.
"""

from __future__ import annotations

from enclave.proto.aead import open_, seal
from enclave.proto.handshake import HandshakeResult
from enclave.proto.keys import SessionKeys
from enclave.proto.replay import ReplayWindow
from enclave.proto.timing import (
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
)
from enclave.proto.wire import (
    MSG_CONTROL,
    MSG_DATA,
    NONCE_DOMAIN_CONTROL,
    NONCE_DOMAIN_DATA,
    pack_transport_header,
)


class KeyLimit(Exception):
    """The keyset may not send any more (too old or counter exhausted)."""


class Keyset:
    """A session's SessionKeys (as the handshake made them) with the Node's state around them."""

    def __init__(self, result: HandshakeResult, now: float, *, confirmed: bool) -> None:
        self.keys: SessionKeys = result.keys  # published as is (PeerKeysUpdated)
        self.local_index = result.keys.local_index
        self.remote_index = result.keys.remote_index
        self.initiator = result.initiator
        self.cipher = result.keys.cipher
        self._rx = result.keys.rx_key
        self._tx = result.keys.tx_key
        self.created = now
        self.confirmed = confirmed
        self.ctl_tx = 0
        self.data_tx = 0
        self.external_tx = 0  # DATA messages the fast path reports having sent
        self.ctl_rx = ReplayWindow()
        self.data_rx = ReplayWindow()
        self.confirm_msg: bytes | None = None  # CONFIRM bytes: initiator resends, responder dedups
        self.confirm_sends = 0
        self.confirm_next: float | None = None
        self.our_cert = b""  # the certificate of ours its handshake presented (Node._rekey_at)

    def __repr__(self) -> str:
        return f"Keyset(local={self.local_index:#010x}, remote={self.remote_index:#010x})"

    @property
    def sent(self) -> int:
        return self.ctl_tx + max(self.data_tx, self.external_tx)

    def expired(self, now: float) -> bool:
        return now >= self.created + REJECT_AFTER_TIME

    def _seal(self, msg_type: int, domain: bytes, counter: int, plain: bytes, now: float) -> bytes:
        if self.expired(now) or counter >= REJECT_AFTER_MESSAGES:
            raise KeyLimit
        header = pack_transport_header(msg_type, self.remote_index, counter)
        return header + seal(self.cipher, self._tx, domain, counter, header, plain)

    def seal_control(self, plain: bytes, now: float) -> bytes:
        out = self._seal(MSG_CONTROL, NONCE_DOMAIN_CONTROL, self.ctl_tx, plain, now)
        self.ctl_tx += 1
        return out

    def seal_data(self, frame: bytes, now: float) -> bytes:
        out = self._seal(MSG_DATA, NONCE_DOMAIN_DATA, self.data_tx, frame, now)
        self.data_tx += 1
        return out

    def open(self, msg_type: int, counter: int, data: bytes, now: float) -> bytes | None:
        """Authenticate + decrypt a DATA/CONTROL message for this keyset; None = drop."""
        if self.expired(now):
            return None
        if msg_type == MSG_DATA:
            window, domain = self.data_rx, NONCE_DOMAIN_DATA
        else:
            window, domain = self.ctl_rx, NONCE_DOMAIN_CONTROL
        if not window.check(counter):
            return None
        header = data[:16]
        plain = open_(self.cipher, self._rx, domain, counter, header, data[16:])
        if plain is None or not window.update(counter):
            return None
        return plain
