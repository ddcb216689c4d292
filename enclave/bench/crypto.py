"""`enclave bench crypto`: AEAD seal throughput in this process, per cipher and frame size.

Two implementations side by side, both libsodium (the same library the fast path dlopens):
  fastpath-batch     enclave._fastpath.AeadKey.seal_batch: BATCH frames per call, nogil C loop,
                     sealed in place behind a HEADROOM-byte header used as associated data
  pynacl-per-frame   nacl.bindings.crypto_aead_*_encrypt called once per frame from Python
Each cell runs for ``seconds`` of wall clock (at least one call); figures are payload bits.
"""

from __future__ import annotations

import os
import time
from array import array
from collections.abc import Callable, Sequence
from typing import Any

BATCH = 64
HEADROOM = 16
DEFAULT_SIZES = (64, 512, 1400, 9000)


def available_ciphers() -> list[str]:
    """The fast path's ciphers this CPU can run (a key can be made for each)."""
    # imported here: keeps `enclave` start-up fast (a build without _fastpath fails here)
    from enclave import _fastpath as fp

    have = []
    for name in fp.CIPHERS:
        try:
            fp.AeadKey(name, bytes(fp.KEY_BYTES))
        except RuntimeError:  # the CPU cannot run it (AES-based without AES-NI)
            continue
        have.append(name)
    return have


def _row(cipher: str, size: int, impl: str, frames: int, seconds: float) -> dict[str, Any]:
    return {
        "cipher": cipher,
        "size": size,
        "impl": impl,
        "op": "seal",
        "frames": frames,
        "seconds": seconds,
        "gbit_s": frames * size * 8 / seconds / 1e9,
        "ns_per_frame": seconds * 1e9 / frames,
    }


def _timed(call: Callable[[], Any], frames_per_call: int, seconds: float) -> tuple[int, float]:
    call()  # warm up
    calls = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    now = t0
    while calls == 0 or now < deadline:
        for _ in range(8):
            call()
        calls += 8
        now = time.perf_counter()
    return calls * frames_per_call, now - t0


def fastpath_seal(cipher: str, size: int, seconds: float) -> dict[str, Any]:
    # imported here: keeps `enclave` start-up fast (a build without _fastpath fails here)
    from enclave import _fastpath as fp

    key = fp.AeadKey(cipher, os.urandom(fp.KEY_BYTES))
    slot = HEADROOM + size + key.tag_bytes
    buf = bytearray(os.urandom(slot * BATCH))
    offsets = array("I", [i * slot for i in range(BATCH)])
    lengths = array("I", [size] * BATCH)
    counters = array("Q", range(BATCH))
    flags = key.seal_batch(buf, offsets, lengths, counters, HEADROOM)
    if flags != bytearray([1] * BATCH):
        raise RuntimeError(f"fast path refused to seal {cipher} {size} B frames")
    frames, secs = _timed(
        lambda: key.seal_batch(buf, offsets, lengths, counters, HEADROOM), BATCH, seconds
    )
    return _row(cipher, size, "fastpath-batch", frames, secs)


def pynacl_seal(cipher: str, size: int, seconds: float) -> dict[str, Any] | None:
    """PyNaCl per frame (the fast path's nonce for each counter); None for a cipher PyNaCl
    has no binding for here."""
    # imported here: keeps `enclave` start-up fast (a build without _fastpath fails here)
    import nacl.bindings as nb

    from enclave import _fastpath as fp

    enc = {
        "aes256gcm": nb.crypto_aead_aes256gcm_encrypt,
        "chacha20poly1305": nb.crypto_aead_chacha20poly1305_ietf_encrypt,
        "aegis256": nb.crypto_aead_aegis256_encrypt,
    }.get(cipher)
    if enc is None:
        return None
    key = os.urandom(32)
    frames = [(os.urandom(HEADROOM), os.urandom(size), fp.nonce_for(i, cipher))
              for i in range(BATCH)]

    def run() -> None:
        for ad, msg, nonce in frames:
            enc(msg, ad, nonce, key)

    n, secs = _timed(run, BATCH, seconds)
    return _row(cipher, size, "pynacl-per-frame", n, secs)


def run(ciphers: Sequence[str] | None = None, sizes: Sequence[int] = DEFAULT_SIZES,
        seconds: float = 0.3, progress: Callable[[str], None] | None = None,
        ) -> list[dict[str, Any]]:
    """All cells; rows in a stable order (cipher, size, fastpath then PyNaCl)."""
    have = available_ciphers()
    chosen = list(ciphers) if ciphers else have
    for c in chosen:
        if c not in have:
            raise ValueError(f"cipher {c!r} not available here (have: {', '.join(have)})")
    for size in sizes:
        if not 1 <= size <= 65535:
            raise ValueError(f"frame size must be 1..65535 bytes, got {size}")
    rows: list[dict[str, Any]] = []
    for cipher in chosen:
        for size in sizes:
            if progress:
                progress(f"crypto {cipher} {size} B")
            rows.append(fastpath_seal(cipher, size, seconds))
            row = pynacl_seal(cipher, size, seconds)
            if row is not None:
                rows.append(row)
    return rows
