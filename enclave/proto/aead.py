"""AEAD seal/open for the Python side (control messages, reference data path), via libsodium,
and the cipher negotiation of the handshake.

The compiled fast path does the same for DATA in C; both follow wire.py:
nonce = domain (4 bytes) || counter (u64 LE) (AEGIS-256: then 20 zero bytes), associated
data = the 16-byte transport header.

Negotiation (the caps byte of each handshake message is that side's offer, wire.CAP_*):

    offer(caps)              ChaCha20-Poly1305 always; AES256-GCM with CAP_AES256GCM_HW;
                             AEGIS-256 with CAP_AEGIS256 (opt-in, AES-NI)
    responder: negotiate     the first of AEGIS-256, AES256-GCM, ChaCha20-Poly1305 that both
                             offers allow; sent as the RESPONSE's cipher byte
    initiator: acceptable    the choice must be in both offers (its own and the responder's,
                             both signed), else the handshake fails

Both caps bytes and the choice are covered by the signatures (INIT by sig_i0; the transcript
H(INIT || RESPONSE) by sig_r and the CONFIRM), so a third party can neither downgrade nor
upgrade the cipher: flipping any of those bits breaks a signature.
"""

from __future__ import annotations

import nacl.bindings as sodium
from nacl.exceptions import CryptoError

from enclave.proto.wire import (
    CAP_AEGIS256,
    CAP_AES256GCM_HW,
    Cipher,
    aead_nonce,
)

# the responder's order of preference (the strongest and fastest both sides allow)
PREFERENCE: tuple[Cipher, ...] = (Cipher.AEGIS256, Cipher.AES256_GCM, Cipher.CHACHA20_POLY1305)


def offer(caps: int) -> frozenset[Cipher]:
    """The ciphers a side allows, from its caps byte (ChaCha20-Poly1305 always)."""
    allowed = {Cipher.CHACHA20_POLY1305}
    if caps & CAP_AES256GCM_HW:
        allowed.add(Cipher.AES256_GCM)
    if caps & CAP_AEGIS256:
        allowed.add(Cipher.AEGIS256)
    return frozenset(allowed)


def negotiate(local_caps: int, remote_caps: int) -> Cipher:
    """The responder's choice: the most preferred cipher both offers allow."""
    both = offer(local_caps) & offer(remote_caps)
    return next(c for c in PREFERENCE if c in both)


def acceptable(choice: int, local_caps: int, remote_caps: int) -> Cipher | None:
    """The initiator's check of the responder's choice: the Cipher if both offers allow it,
    else None (the handshake then fails)."""
    try:
        cipher = Cipher(choice)
    except ValueError:
        return None
    if cipher in offer(local_caps) and cipher in offer(remote_caps):
        return cipher
    return None


def seal(cipher: Cipher, key: bytes, domain: bytes, counter: int, ad: bytes, plain: bytes) -> bytes:
    nonce = aead_nonce(domain, counter, cipher.nonce_size)
    if cipher is Cipher.AES256_GCM:
        out: bytes = sodium.crypto_aead_aes256gcm_encrypt(plain, ad, nonce, key)
    elif cipher is Cipher.AEGIS256:
        out = sodium.crypto_aead_aegis256_encrypt(plain, ad, nonce, key)
    else:
        out = sodium.crypto_aead_chacha20poly1305_ietf_encrypt(plain, ad, nonce, key)
    return out


def open_(
    cipher: Cipher, key: bytes, domain: bytes, counter: int, ad: bytes, sealed: bytes
) -> bytes | None:
    """Decrypt and authenticate; None when the tag does not verify (or `sealed` is shorter
    than the tag)."""
    if len(sealed) < cipher.tag_size:
        return None
    nonce = aead_nonce(domain, counter, cipher.nonce_size)
    try:
        if cipher is Cipher.AES256_GCM:
            out: bytes = sodium.crypto_aead_aes256gcm_decrypt(sealed, ad, nonce, key)
        elif cipher is Cipher.AEGIS256:
            out = sodium.crypto_aead_aegis256_decrypt(sealed, ad, nonce, key)
        else:
            out = sodium.crypto_aead_chacha20poly1305_ietf_decrypt(sealed, ad, nonce, key)
    except CryptoError:
        return None
    return out
