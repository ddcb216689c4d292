"""AEAD throughput: the compiled batch path vs PyNaCl called once per frame from Python.

    pytest bench --benchmark-enable     # numbers (Gbit/s in extra_info, --benchmark-json)
    pytest bench                        # correctness smoke only (benchmarks disabled)

Each round seals BATCH frames of SIZE payload bytes behind a HEADROOM-byte header (the AD).
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable
from typing import Any

import nacl.bindings as nb
import pytest

from enclave import _fastpath as fp

BATCH = 64
HEADROOM = 16
SLOT_TAG = fp.MAX_TAG_BYTES  # tailroom for any cipher's tag; fp.tag_bytes(cipher) is its own
SIZES = [64, 1400, 9000]
PYNACL: dict[str, Callable[[bytes, bytes | None, bytes, bytes], bytes]] = {
    "aes256gcm": nb.crypto_aead_aes256gcm_encrypt,
    "chacha20poly1305": nb.crypto_aead_chacha20poly1305_ietf_encrypt,
    "aegis256": nb.crypto_aead_aegis256_encrypt,
}
CIPHERS = [c for c in fp.CIPHERS if (c != "aes256gcm" or fp.aes256gcm_available())
           and (c != "aegis256" or fp.aegis256_available())]


def _gbits(benchmark: Any, size: int) -> None:
    stats = getattr(benchmark, "stats", None)
    mean = stats.stats.mean if stats is not None else None
    payload_bits = BATCH * size * 8
    if mean:
        benchmark.extra_info["gbit_s"] = round(payload_bits / mean / 1e9, 3)
        benchmark.extra_info["frames_per_s"] = round(BATCH / mean)
    benchmark.extra_info["payload_bytes_per_round"] = BATCH * size


def _batch(size: int) -> tuple[bytearray, array, array, array]:
    slot = HEADROOM + size + SLOT_TAG
    buf = bytearray(os.urandom(slot * BATCH))
    offsets = array("I", [i * slot for i in range(BATCH)])
    lengths = array("I", [size] * BATCH)
    counters = array("Q", range(BATCH))
    return buf, offsets, lengths, counters


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("cipher", CIPHERS)
def test_fastpath_seal_batch(benchmark: Any, cipher: str, size: int) -> None:
    key = os.urandom(32)
    k = fp.AeadKey(cipher, key)
    buf, offsets, lengths, counters = _batch(size)
    benchmark.group = f"seal {size}B x{BATCH}"
    flags = benchmark(k.seal_batch, buf, offsets, lengths, counters, HEADROOM)
    assert flags == bytearray([1] * BATCH)
    _gbits(benchmark, size)
    # smoke: a fresh batch sealed once equals PyNaCl's output and opens again
    buf, offsets, lengths, counters = _batch(size)
    plain = bytes(buf)
    k.seal_batch(buf, offsets, lengths, counters, HEADROOM)
    last = offsets[-1]
    hdr = plain[last : last + HEADROOM]
    ref = PYNACL[cipher](plain[last + HEADROOM : last + HEADROOM + size], hdr,
                         fp.nonce_for(counters[-1], cipher), key)
    tag = fp.tag_bytes(cipher)
    assert bytes(buf[last + HEADROOM : last + HEADROOM + size + tag]) == ref
    wire = array("I", [size + tag] * BATCH)
    assert k.open_batch(buf, offsets, wire, counters, HEADROOM) == bytearray([1] * BATCH)
    assert bytes(buf[last + HEADROOM : last + HEADROOM + size]) == (
        plain[last + HEADROOM : last + HEADROOM + size]
    )


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("cipher", CIPHERS)
def test_fastpath_open_batch(benchmark: Any, cipher: str, size: int) -> None:
    k = fp.AeadKey(cipher, os.urandom(32))
    buf, offsets, lengths, counters = _batch(size)
    k.seal_batch(buf, offsets, lengths, counters, HEADROOM)
    sealed = bytes(buf)
    wire = array("I", [size + fp.tag_bytes(cipher)] * BATCH)

    def restore() -> None:
        buf[:] = sealed

    benchmark.group = f"open {size}B x{BATCH}"
    results: list[bytearray] = []

    def run() -> None:
        results.append(k.open_batch(buf, offsets, wire, counters, HEADROOM))

    benchmark.pedantic(run, setup=restore, rounds=200, warmup_rounds=5)
    assert results and all(r == bytearray([1] * BATCH) for r in results)
    _gbits(benchmark, size)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("cipher", CIPHERS)
def test_pynacl_per_frame(benchmark: Any, cipher: str, size: int) -> None:
    key = os.urandom(32)
    enc = PYNACL[cipher]
    frames = [(os.urandom(HEADROOM), os.urandom(size)) for _ in range(BATCH)]
    nonces = [fp.nonce_for(i, cipher) for i in range(BATCH)]

    def run() -> list[bytes]:
        return [enc(m, ad, n, key) for (ad, m), n in zip(frames, nonces, strict=True)]

    benchmark.group = f"seal {size}B x{BATCH}"
    out = benchmark(run)
    assert len(out) == BATCH and all(len(c) == size + fp.tag_bytes(cipher) for c in out)
    _gbits(benchmark, size)
