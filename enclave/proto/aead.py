"""AEAD seal/open for the Python side (control messages, reference data path), via libsodium.

The compiled fast path does the same for DATA in C; both follow wire.py:
nonce = domain (4 bytes) || counter (u64 LE), associated data = the 16-byte transport header.
"""

from __future__ import annotations

import nacl.bindings as sodium
from nacl.exceptions import CryptoError

from enclave.proto.wire import (
    CAP_AES256GCM_HW,
    Cipher,
    aead_nonce,
)


def choose_cipher(local_caps: int, remote_caps: int) -> Cipher:
    """AES256-GCM only if both sides have it in hardware, else ChaCha20-Poly1305."""
    if local_caps & remote_caps & CAP_AES256GCM_HW:
        return Cipher.AES256_GCM
    return Cipher.CHACHA20_POLY1305


def seal(cipher: Cipher, key: bytes, domain: bytes, counter: int, ad: bytes, plain: bytes) -> bytes:
    nonce = aead_nonce(domain, counter)
    if cipher is Cipher.AES256_GCM:
        out: bytes = sodium.crypto_aead_aes256gcm_encrypt(plain, ad, nonce, key)
    else:
        out = sodium.crypto_aead_chacha20poly1305_ietf_encrypt(plain, ad, nonce, key)
    return out


def open_(
    cipher: Cipher, key: bytes, domain: bytes, counter: int, ad: bytes, sealed: bytes
) -> bytes | None:
    """Decrypt and authenticate; None when the tag does not verify."""
    nonce = aead_nonce(domain, counter)
    try:
        if cipher is Cipher.AES256_GCM:
            out: bytes = sodium.crypto_aead_aes256gcm_decrypt(sealed, ad, nonce, key)
        else:
            out = sodium.crypto_aead_chacha20poly1305_ietf_decrypt(sealed, ad, nonce, key)
    except CryptoError:
        return None
    return out
