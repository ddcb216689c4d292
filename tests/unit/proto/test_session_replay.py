"""Replay window, rate limits and keyset seal/open (table cases)."""

from __future__ import annotations

import pytest

from enclave.proto.handshake import HandshakeResult
from enclave.proto.keys import SessionKeys
from enclave.proto.ratelimit import KeyedRateLimiter, TokenBucket
from enclave.proto.replay import REPLAY_WINDOW, ReplayWindow
from enclave.proto.session import KeyLimit, Keyset
from enclave.proto.timing import REJECT_AFTER_TIME
from enclave.proto.wire import MSG_CONTROL, MSG_DATA, Cipher


@pytest.mark.parametrize(
    ("case", "seq", "expected"),
    [
        (1, [0, 1, 2], [True, True, True]),  # in order
        (2, [5, 5], [True, False]),  # duplicate
        (3, [10000, 10000 - REPLAY_WINDOW, 10000 - REPLAY_WINDOW - 1], [True, True, False]),  # edge
        (4, [3, 1, 2, 1], [True, True, True, False]),  # reorder then duplicate
        (5, [1, 10**12, 2], [True, True, False]),  # far jump
        (6, [2**64 - 1], [False]),  # counter limit
    ],
)
def test_replay_window(case: int, seq: list[int], expected: list[bool]) -> None:
    w = ReplayWindow()
    assert [w.update(c) for c in seq] == expected


def test_replay_check_does_not_update() -> None:
    w = ReplayWindow()
    assert w.check(4) and w.check(4)
    assert w.update(4) and not w.check(4)


def test_token_bucket_and_keyed_limiter() -> None:
    b = TokenBucket(rate=10, burst=2)
    assert [b.allow(0.0) for _ in range(3)] == [True, True, False]
    assert b.allow(0.1) and not b.allow(0.1)
    k = KeyedRateLimiter(1, 1, global_rate=100, global_burst=3, max_keys=2)
    assert k.allow("a", 0) and not k.allow("a", 0)
    assert k.allow("b", 0) and k.allow("c", 0)
    assert len(k) == 2  # LRU bounded
    assert not k.allow("d", 0)  # the global bucket is empty


def _pair(cipher: Cipher) -> tuple[Keyset, Keyset]:
    k1, k2 = bytes(range(32)), bytes(range(1, 33))
    a = HandshakeResult(None, b"", True, SessionKeys(1, 2, k1, k2, cipher))  # type: ignore[arg-type]
    b = HandshakeResult(None, b"", False, SessionKeys(2, 1, k2, k1, cipher))  # type: ignore[arg-type]
    return Keyset(a, 0.0, confirmed=True), Keyset(b, 0.0, confirmed=True)


@pytest.mark.parametrize("cipher", list(Cipher))
def test_keyset_seal_open_and_domains(cipher: Cipher) -> None:
    a, b = _pair(cipher)
    d = a.seal_data(b"frame", 1.0)
    c = a.seal_control(b"\1\0", 1.0)
    assert d[:4] == bytes([MSG_DATA, 0, 0, 0]) and c[0] == MSG_CONTROL
    assert b.open(MSG_DATA, 0, d, 1.0) == b"frame"
    assert b.open(MSG_DATA, 0, d, 1.0) is None  # replay
    assert b.open(MSG_CONTROL, 0, c, 1.0) == b"\1\0"
    # the same counter in the other domain does not open (disjoint nonces)
    assert b.open(MSG_CONTROL, 0, d[:1] + bytes([0, 0, 0]) + d[4:], 1.0) is None
    tampered = bytearray(a.seal_data(b"x", 1.0))
    tampered[-1] ^= 1
    assert b.open(MSG_DATA, 1, bytes(tampered), 1.0) is None
    with pytest.raises(KeyLimit):
        a.seal_data(b"late", REJECT_AFTER_TIME)
    assert b.open(MSG_DATA, 1, a.seal_data(b"y", 2.0)[:0] or d, REJECT_AFTER_TIME) is None
