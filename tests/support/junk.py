"""Junk a stranger can send a responder: INIT-shaped datagrams (issue 12's floods).

    init_shaped(rng)                                   type word + random bytes, or an INIT-sized
                                                       body whose certificate-length field fits
    init_shaped(rng, kinds=(MSG_HANDSHAKE_INIT, MSG_HANDSHAKE_INIT_V1), max_junk=1400)
"""

from __future__ import annotations

import random

from enclave.proto.wire import INIT_FIXED_SIZE, MSG_HANDSHAKE_INIT


def init_shaped(rng: random.Random, *, kinds: tuple[int, ...] = (MSG_HANDSHAKE_INIT,),
                max_junk: int = 1500, cert_lens: range = range(1, 1248)) -> bytes:
    """Half the time a type word (one of `kinds`) and up to `max_junk` random bytes; else a
    random INIT of the right size for its certificate-length field (a length from
    `cert_lens`, reserved byte zero), so the responder really computes MAC1 over it."""
    kind = rng.choice(kinds)
    if rng.random() < 0.5:
        return bytes([kind, 0, 0, 0]) + rng.randbytes(rng.randrange(0, max_junk))
    cert_len = rng.choice(cert_lens)
    body = bytearray(rng.randbytes(INIT_FIXED_SIZE + cert_len))
    body[:4] = bytes([MSG_HANDSHAKE_INIT, 0, 0, 0])
    body[81] = 0
    body[82:84] = cert_len.to_bytes(2, "little")
    return bytes(body)
