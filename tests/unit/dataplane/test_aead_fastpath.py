"""AeadKey batch seal/open in place, checked against PyNaCl (known answers) for both ciphers."""

from __future__ import annotations

import os
import random
from array import array
from collections.abc import Callable

import nacl.bindings as nb
import pytest

from enclave import _fastpath as fp

HEADROOM = 16
TAG = fp.TAG_BYTES

Encrypt = Callable[[bytes, bytes | None, bytes, bytes], bytes]
REFERENCE: dict[str, Encrypt] = {
    "aes256gcm": nb.crypto_aead_aes256gcm_encrypt,
    "chacha20poly1305": nb.crypto_aead_chacha20poly1305_ietf_encrypt,
}
CIPHERS = pytest.mark.parametrize("cipher", sorted(REFERENCE))


def pack(frames: list[tuple[bytes, bytes]], slot: int) -> tuple[bytearray, array, array]:
    """Lay (header, payload) pairs out at fixed slot offsets with TAG bytes of tailroom."""
    buf = bytearray(slot * len(frames))
    offsets = array("I")
    lengths = array("I")
    for i, (hdr, payload) in enumerate(frames):
        off = i * slot
        buf[off : off + HEADROOM + len(payload)] = hdr + payload
        offsets.append(off)
        lengths.append(len(payload))
    return buf, offsets, lengths


def make_frames(n: int, size: int, seed: int) -> list[tuple[bytes, bytes]]:
    rnd = random.Random(seed)
    return [(rnd.randbytes(HEADROOM), rnd.randbytes(size)) for _ in range(n)]


def test_nonce_layout() -> None:
    assert fp.NONCE_BYTES == 12
    assert fp.nonce_for(0) == bytes(12)
    assert fp.nonce_for(1) == bytes(4) + b"\x01" + bytes(7)
    assert fp.nonce_for(0x0102030405060708) == bytes(4) + bytes.fromhex("0807060504030201")
    assert fp.nonce_for(2**64 - 1) == bytes(4) + b"\xff" * 8


@CIPHERS
@pytest.mark.parametrize(
    ("n", "size"), [(1, 0), (1, 1), (1, 9000), (64, 1400), (64, 0), (3, 64)]
)
def test_seal_matches_pynacl_and_opens(cipher: str, n: int, size: int) -> None:
    key = os.urandom(fp.KEY_BYTES)
    k = fp.AeadKey(cipher, key)
    frames = make_frames(n, size, seed=n * 10007 + size)
    slot = HEADROOM + size + TAG + 5  # odd slot size: frames need not be aligned
    buf, offsets, lengths = pack(frames, slot)
    counters = array("Q", [(i * 7919) << 33 | i for i in range(n)])

    assert k.seal_batch(buf, offsets, lengths, counters, HEADROOM) == bytearray([1] * n)
    for i, (hdr, payload) in enumerate(frames):
        off = offsets[i]
        expected = REFERENCE[cipher](payload, hdr, fp.nonce_for(counters[i]), key)
        assert bytes(buf[off : off + HEADROOM]) == hdr  # header untouched
        assert bytes(buf[off + HEADROOM : off + HEADROOM + size + TAG]) == expected

    wire_lengths = array("I", [size + TAG] * n)
    assert k.open_batch(buf, offsets, wire_lengths, counters, HEADROOM) == bytearray([1] * n)
    for i, (_hdr, payload) in enumerate(frames):
        off = offsets[i]
        assert bytes(buf[off + HEADROOM : off + HEADROOM + size]) == payload


@CIPHERS
def test_opens_pynacl_ciphertext(cipher: str) -> None:
    key = os.urandom(32)
    hdr, payload = os.urandom(HEADROOM), os.urandom(1400)
    wire = hdr + REFERENCE[cipher](payload, hdr, fp.nonce_for(42), key)
    buf = bytearray(wire)
    flags = fp.AeadKey(cipher, key).open_batch(
        buf, array("I", [0]), array("I", [len(wire) - HEADROOM]), array("Q", [42]), HEADROOM
    )
    assert flags == bytearray(b"\x01")
    assert bytes(buf[HEADROOM : HEADROOM + 1400]) == payload


def sealed_batch(cipher: str, key: bytes, n: int = 4, size: int = 100) -> tuple[bytearray, array]:
    frames = make_frames(n, size, seed=99)
    buf, offsets, lengths = pack(frames, HEADROOM + size + TAG)
    fp.AeadKey(cipher, key).seal_batch(buf, offsets, lengths, array("Q", range(n)), HEADROOM)
    return buf, offsets


# Byte positions (relative to the frame start) to flip, with what they hit.
TAMPER = {
    "header/AD first byte": 0,
    "header/AD last byte": HEADROOM - 1,
    "ciphertext first byte": HEADROOM,
    "ciphertext last byte": HEADROOM + 99,
    "tag first byte": HEADROOM + 100,
    "tag last byte": HEADROOM + 100 + TAG - 1,
}


@CIPHERS
@pytest.mark.parametrize("where", sorted(TAMPER))
def test_tampering_rejected_only_for_that_frame(cipher: str, where: str) -> None:
    key = os.urandom(32)
    buf, offsets = sealed_batch(cipher, key)
    buf[offsets[2] + TAMPER[where]] ^= 0x01
    flags = fp.AeadKey(cipher, key).open_batch(
        buf, offsets, array("I", [100 + TAG] * 4), array("Q", range(4)), HEADROOM
    )
    assert flags == bytearray([1, 1, 0, 1])


@CIPHERS
def test_wrong_key_wrong_counter_wrong_cipher_rejected(cipher: str) -> None:
    key = os.urandom(32)
    other = "chacha20poly1305" if cipher == "aes256gcm" else "aes256gcm"
    lengths = array("I", [100 + TAG] * 4)
    attempts: list[tuple[fp.AeadKey, array]] = [
        (fp.AeadKey(cipher, os.urandom(32)), array("Q", range(4))),  # wrong key
        (fp.AeadKey(cipher, key), array("Q", [1, 2, 3, 4])),  # wrong counters
        (fp.AeadKey(other, key), array("Q", range(4))),  # wrong cipher, same key
    ]
    for k, counters in attempts:
        buf, offsets = sealed_batch(cipher, key)
        assert k.open_batch(buf, offsets, lengths, counters, HEADROOM) == bytearray(4)


@CIPHERS
def test_truncated_frames_rejected(cipher: str) -> None:
    key = os.urandom(32)
    buf, offsets = sealed_batch(cipher, key)
    flags = fp.AeadKey(cipher, key).open_batch(
        buf, offsets, array("I", [0, TAG - 1, TAG, 100 + TAG - 1]), array("Q", range(4)), HEADROOM
    )
    assert flags == bytearray(4)


@CIPHERS
def test_zero_headroom_and_empty_batch(cipher: str) -> None:
    key = os.urandom(32)
    k = fp.AeadKey(cipher, key)
    buf = bytearray(b"payload" + bytes(TAG))
    assert k.seal_batch(buf, array("I", [0]), array("I", [7]), array("Q", [5]), 0) == b"\x01"
    assert bytes(buf) == REFERENCE[cipher](b"payload", None, fp.nonce_for(5), key)
    assert k.seal_batch(bytearray(), array("I"), array("I"), array("Q"), 0) == bytearray()


@CIPHERS
def test_out_of_bounds_batch_raises_and_touches_nothing(cipher: str) -> None:
    k = fp.AeadKey(cipher, os.urandom(32))
    buf = bytearray(os.urandom(2 * 64))
    before = bytes(buf)
    # frame 0 fits; frame 1 lacks room for its tag -> ValueError before frame 0 is sealed
    with pytest.raises(ValueError, match="frame 1"):
        k.seal_batch(buf, array("I", [0, 64]), array("I", [64 - HEADROOM - TAG, 64 - HEADROOM]),
                     array("Q", [0, 1]), HEADROOM)
    assert bytes(buf) == before
    with pytest.raises(ValueError, match="frame 0"):
        k.open_batch(buf, array("I", [2**32 - 1]), array("I", [TAG]), array("Q", [0]), HEADROOM)
    with pytest.raises(ValueError, match="differ in length"):
        k.open_batch(buf, array("I", [0, 64]), array("I", [TAG]), array("Q", [0, 1]), HEADROOM)
    with pytest.raises(ValueError, match="headroom"):
        k.open_batch(buf, array("I", [0]), array("I", [0]), array("Q", [0]), 4096)
    assert bytes(buf) == before


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="key must be 32 bytes"):
        fp.AeadKey("aes256gcm", bytes(31))
    with pytest.raises(ValueError, match="unknown cipher"):
        fp.AeadKey("aes128gcm", bytes(32))
    k = fp.AeadKey("chacha20poly1305", bytes(32))
    with pytest.raises((TypeError, BufferError)):  # read-only buffer cannot be sealed in place
        k.seal_batch(b"x" * 64, array("I", [0]), array("I", [1]), array("Q", [0]), 0)
    with pytest.raises(ValueError):  # wrong element type for offsets
        k.seal_batch(bytearray(64), array("Q", [0]), array("I", [1]), array("Q", [0]), 0)
    assert "hidden" in repr(k) and "00" not in repr(k)


def test_missing_symbol_is_named() -> None:
    fp.check_symbol("crypto_aead_aes256gcm_beforenm")
    with pytest.raises(ImportError, match="sodium_version_string"):
        fp.check_symbol("sodium_version_string")


def test_libsodium_is_pynacls_copy() -> None:
    import nacl._sodium

    assert fp.SODIUM_PATH == nacl._sodium.__file__
    flags = fp.sodium_runtime_flags()
    assert set(flags) >= {"aesni", "pclmul", "ssse3"}
    assert fp.aes256gcm_available() == (flags["aesni"] and flags["pclmul"])
