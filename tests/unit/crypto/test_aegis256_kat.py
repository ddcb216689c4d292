"""AEGIS-256 in the compiled fast path (AeadKey, batch seal/open in place, GIL released) and
in the Python AEAD (enclave.proto.aead, CONTROL messages): known answers against PyNaCl's
crypto_aead_aegis256_* and a published test vector, the 32-byte counter nonce, the 32-byte tag.
"""

from __future__ import annotations

import os
import random
from array import array

import nacl.bindings as nb
import pytest

from enclave import _fastpath as fp
from enclave.proto import aead
from enclave.proto.wire import (
    AEGIS256_NONCE_SIZE,
    AEGIS256_TAG_SIZE,
    NONCE_DOMAIN_CONTROL,
    NONCE_DOMAIN_DATA,
    Cipher,
    aead_nonce,
)

pytestmark = pytest.mark.skipif(not fp.aegis256_available(),
                                reason="libsodium does not run AEGIS-256 on AES-NI here")

HEADROOM = 16
TAG = 32


def test_sizes_and_names() -> None:
    assert fp.AEGIS_TAG_BYTES == AEGIS256_TAG_SIZE == nb.crypto_aead_aegis256_ABYTES == TAG
    assert fp.AEGIS_NONCE_BYTES == AEGIS256_NONCE_SIZE == nb.crypto_aead_aegis256_NPUBBYTES
    assert fp.MAX_TAG_BYTES == 32 and fp.TAG_BYTES == 16
    assert "aegis256" in fp.CIPHERS
    assert fp.tag_bytes("aegis256") == fp.tag_bytes(Cipher.AEGIS256) == 32
    assert fp.tag_bytes(Cipher.AES256_GCM) == fp.tag_bytes("chacha20poly1305") == 16
    k = fp.AeadKey(Cipher.AEGIS256, bytes(32))
    assert k.cipher == "aegis256" and k.tag_bytes == 32
    assert "key hidden" in repr(k)
    with pytest.raises(ValueError):
        fp.tag_bytes("aegis128l")
    with pytest.raises(ValueError):
        fp.AeadKey("aegis256", bytes(31))


def test_nonce_is_the_counter_never_random() -> None:
    n = fp.nonce_for(0x0102030405060708, "aegis256")
    assert len(n) == 32
    assert n == bytes(4) + bytes.fromhex("0807060504030201") + bytes(20)
    assert n[:12] == fp.nonce_for(0x0102030405060708)  # the 12-byte layout, zero-padded
    assert fp.nonce_for(7, Cipher.AEGIS256) == fp.nonce_for(7, "aegis256")
    # the Python side builds the same bytes (DATA domain), CONTROL differs in its domain only
    assert aead_nonce(NONCE_DOMAIN_DATA, 7, Cipher.AEGIS256.nonce_size) == fp.nonce_for(
        7, "aegis256")
    ctl = aead_nonce(NONCE_DOMAIN_CONTROL, 7, 32)
    assert ctl[:4] == b"\x01\0\0\0" and ctl[4:] == fp.nonce_for(7, "aegis256")[4:]


def test_published_vector() -> None:
    """AEGIS-256 test vector 1 of draft-irtf-cfrg-aegis-aead (256-bit tag), through the fast
    path: empty AD (headroom 0), one 16-byte zero block; the nonce is a raw 32-byte value, so
    it is checked through libsodium via PyNaCl and the fast path must agree with PyNaCl."""
    key = bytes.fromhex("10010000000000000000000000000000" + "00" * 16)
    nonce = bytes.fromhex("10000200000000000000000000000000" + "00" * 16)
    ct = bytes.fromhex("754fc3d8c973246dcc6d741412a4b236")
    tag = bytes.fromhex("1181a1d18091082bf0266f66297d167d2e68b845f61a3b0527d31fc7b7b89f13")
    assert nb.crypto_aead_aegis256_encrypt(bytes(16), b"", nonce, key) == ct + tag
    # our nonce for counter c is 00000000 || c LE || zeros: the vector's nonce is not one of
    # those, so check the counter the fast path uses against libsodium on the same inputs
    k = fp.AeadKey("aegis256", key)
    buf = bytearray(16 + TAG)
    assert k.seal_batch(buf, array("I", [0]), array("I", [16]), array("Q", [5]), 0) == b"\x01"
    assert bytes(buf) == nb.crypto_aead_aegis256_encrypt(bytes(16), b"",
                                                         fp.nonce_for(5, "aegis256"), key)


@pytest.mark.parametrize(("n", "size"), [(1, 0), (1, 1), (1, 9000), (64, 1400), (3, 31)])
def test_seal_batch_matches_pynacl_and_opens(n: int, size: int) -> None:
    key = os.urandom(32)
    k = fp.AeadKey("aegis256", key)
    rnd = random.Random(n * 7 + size)
    frames = [(rnd.randbytes(HEADROOM), rnd.randbytes(size)) for _ in range(n)]
    slot = HEADROOM + size + TAG + 3  # odd slot: frames need not be aligned
    buf = bytearray(slot * n)
    offsets, lengths = array("I"), array("I")
    for i, (hdr, payload) in enumerate(frames):
        buf[i * slot : i * slot + HEADROOM + size] = hdr + payload
        offsets.append(i * slot)
        lengths.append(size)
    counters = array("Q", [(i * 7919) << 33 | i for i in range(n)])
    assert k.seal_batch(buf, offsets, lengths, counters, HEADROOM) == bytearray([1] * n)
    for i, (hdr, payload) in enumerate(frames):
        off = offsets[i]
        want = nb.crypto_aead_aegis256_encrypt(payload, hdr, fp.nonce_for(counters[i],
                                                                          "aegis256"), key)
        assert bytes(buf[off : off + HEADROOM]) == hdr
        assert bytes(buf[off + HEADROOM : off + HEADROOM + size + TAG]) == want
    wire = array("I", [size + TAG] * n)
    assert k.open_batch(buf, offsets, wire, counters, HEADROOM) == bytearray([1] * n)
    for i, (_hdr, payload) in enumerate(frames):
        assert bytes(buf[offsets[i] + HEADROOM : offsets[i] + HEADROOM + size]) == payload


def test_opens_pynacl_ciphertext_and_rejects_tampering() -> None:
    key = os.urandom(32)
    k = fp.AeadKey("aegis256", key)
    hdr, msg = os.urandom(HEADROOM), os.urandom(1400)
    sealed = nb.crypto_aead_aegis256_encrypt(msg, hdr, fp.nonce_for(99, "aegis256"), key)
    one = array("I", [0])
    clen = array("I", [len(sealed)])
    ctr = array("Q", [99])
    buf = bytearray(hdr + sealed)
    assert k.open_batch(buf, one, clen, ctr, HEADROOM) == b"\x01"
    assert bytes(buf[HEADROOM : HEADROOM + len(msg)]) == msg
    for where in (0, HEADROOM + 5, HEADROOM + len(msg), len(hdr + sealed) - 1):  # AD, ct, tag
        bad = bytearray(hdr + sealed)
        bad[where] ^= 0x01
        assert k.open_batch(bad, one, clen, ctr, HEADROOM) == b"\x00"
    # wrong counter (nonce), wrong key, the other ciphers' 16-byte tag view: all rejected
    assert k.open_batch(bytearray(hdr + sealed), one, clen, array("Q", [98]), HEADROOM) == b"\0"
    other = fp.AeadKey("aegis256", os.urandom(32))
    assert other.open_batch(bytearray(hdr + sealed), one, clen, ctr, HEADROOM) == b"\x00"
    short = array("I", [len(sealed) - 16])
    assert k.open_batch(bytearray(hdr + sealed), one, short, ctr, HEADROOM) == b"\x00"
    # shorter than the 32-byte tag: rejected, never read before the frame
    for n in (0, 16, 31):
        assert k.open_batch(bytearray(HEADROOM + 64), one, array("I", [n]), ctr,
                            HEADROOM) == b"\x00"


def test_seal_needs_32_bytes_of_tailroom() -> None:
    k = fp.AeadKey("aegis256", os.urandom(32))
    buf = bytearray(HEADROOM + 100 + 16)  # room for a 16-byte tag only
    before = bytes(buf)
    with pytest.raises(ValueError, match=r"\+32 tag"):
        k.seal_batch(buf, array("I", [0]), array("I", [100]), array("Q", [0]), HEADROOM)
    assert bytes(buf) == before


@pytest.mark.parametrize("domain", [NONCE_DOMAIN_DATA, NONCE_DOMAIN_CONTROL])
def test_python_aead_interoperates_with_the_fast_path(domain: bytes) -> None:
    key = os.urandom(32)
    hdr, msg = os.urandom(HEADROOM), b"control plaintext"
    sealed = aead.seal(Cipher.AEGIS256, key, domain, 12345, hdr, msg)
    assert len(sealed) == len(msg) + 32
    assert sealed == nb.crypto_aead_aegis256_encrypt(msg, hdr, aead_nonce(domain, 12345, 32),
                                                     key)
    assert aead.open_(Cipher.AEGIS256, key, domain, 12345, hdr, sealed) == msg
    assert aead.open_(Cipher.AEGIS256, key, domain, 12346, hdr, sealed) is None
    assert aead.open_(Cipher.AES256_GCM, key, domain, 12345, hdr, sealed) is None
    for n in (0, 1, 31):  # shorter than the tag: None, not an exception
        assert aead.open_(Cipher.AEGIS256, key, domain, 12345, hdr, sealed[:n]) is None
    if domain == NONCE_DOMAIN_DATA:  # DATA sealed in Python opens in the fast path
        buf = bytearray(hdr + sealed)
        k = fp.AeadKey(Cipher.AEGIS256, key)
        assert k.open_batch(buf, array("I", [0]), array("I", [len(sealed)]),
                            array("Q", [12345]), HEADROOM) == b"\x01"
        assert bytes(buf[HEADROOM : HEADROOM + len(msg)]) == msg
