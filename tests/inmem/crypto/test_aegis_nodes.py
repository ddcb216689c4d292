"""Two Nodes on the in-memory router negotiate AEGIS-256 when both offer it (and only then),
exchange data both ways (DATA and CONTROL sealed with AEGIS-256's 32-byte tag) and rekey."""

from __future__ import annotations

import dataclasses

import nacl.bindings as sodium
import pytest

from enclave.proto import timing as T
from enclave.proto.events import PeerKeysUpdated
from enclave.proto.wire import (
    CAP_AEGIS256,
    CAP_AES256GCM_HW,
    DATA_HEADER_SIZE,
    MSG_DATA,
    Cipher,
    aead_nonce,
    pack_transport_header,
)
from tests.support.peers import A, B, connect, frames, pair
from tests.support.router import Host

AES, AEGIS = CAP_AES256GCM_HW, CAP_AEGIS256


def offer(h: Host, caps: int) -> None:
    h.node.creds = dataclasses.replace(h.node.creds, caps=caps)


@pytest.mark.parametrize(("case", "caps_a", "caps_b", "want"), [
    (1, AES | AEGIS, AES | AEGIS, Cipher.AEGIS256),
    (2, AES | AEGIS, AES, Cipher.AES256_GCM),
    (3, AES, AES | AEGIS, Cipher.AES256_GCM),
    (4, AES | AEGIS, 0, Cipher.CHACHA20_POLY1305),
])
def test_two_nodes_negotiate_and_exchange_data(case: int, caps_a: int, caps_b: int,
                                               want: Cipher) -> None:
    _pki, r, a, b = pair()
    offer(a, caps_a)
    offer(b, caps_b)
    r.log.clear()
    connect(r, a, b)
    ka, kb = a.node.session(B), b.node.session(A)
    assert ka is not None and kb is not None
    assert ka.cipher is want and kb.cipher is want
    # the fast path gets the same cipher in its key event
    for h in (a, b):
        upd = [e for e in h.events if isinstance(e, PeerKeysUpdated)][-1]
        assert upd.tx is not None and upd.tx.cipher is want
    # the Python data path both ways
    assert a.node.send_data(B, b"x" * 1000, r.now)
    assert b.node.send_data(A, b"hello A", r.now)
    r.run(0.1)
    assert frames(b) == [b"x" * 1000] and frames(a) == [b"hello A"]
    # on the wire: header + 1000 bytes + the cipher's tag (32 for AEGIS-256)
    data = [d for _t, src, _dst, d in r.log if src == A and d[0] == MSG_DATA]
    assert data and len(data[-1]) == DATA_HEADER_SIZE + 1000 + want.tag_size
    if want is Cipher.AEGIS256:  # what the fast path seals opens with the peer's key
        header = pack_transport_header(MSG_DATA, ka.remote_index, 9)
        nonce = aead_nonce(b"\0\0\0\0", 9, 32)
        ct = sodium.crypto_aead_aegis256_encrypt(b"frame", header, nonce, ka.tx_key)
        assert sodium.crypto_aead_aegis256_decrypt(ct, header, nonce, kb.rx_key) == b"frame"


def test_aegis_session_survives_keepalives_and_rekey() -> None:
    _pki, r, a, b = pair()
    offer(a, AES | AEGIS)
    offer(b, AES | AEGIS)
    connect(r, a, b)
    first = a.node.session(B)
    assert first is not None and first.cipher is Cipher.AEGIS256
    r.run(T.REKEY_AFTER_TIME + 10)  # idle keepalives (CONTROL) and a rekey
    now = a.node.session(B)
    assert now is not None and now.tx_key != first.tx_key and now.cipher is Cipher.AEGIS256
    assert a.node.send_data(B, b"after rekey", r.now)
    r.run(0.1)
    assert frames(b)[-1:] == [b"after rekey"]
