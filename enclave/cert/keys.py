"""Ed25519 keys: generation, raw encodings, signatures and fingerprints. No I/O."""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ED25519_PUBLIC_KEY_LEN = 32
ED25519_SIGNATURE_LEN = 64

__all__ = [
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "generate_private_key",
    "public_key_raw",
    "sign",
    "spki_sha256",
    "verify",
]


def generate_private_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 key from the OS CSPRNG (generated on this host, never sent anywhere)."""
    return Ed25519PrivateKey.generate()


def public_key_raw(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The raw 32-byte Ed25519 public key."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign(priv: Ed25519PrivateKey, data: bytes) -> bytes:
    """A 64-byte Ed25519 signature of ``data``."""
    return priv.sign(data)


def verify(pub_raw: bytes, sig: bytes, data: bytes) -> bool:
    """True if ``sig`` is a valid Ed25519 signature of ``data`` by the raw public key ``pub_raw``.

    Malformed keys or signatures give False, never an exception.
    """
    if len(pub_raw) != ED25519_PUBLIC_KEY_LEN or len(sig) != ED25519_SIGNATURE_LEN:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(pub_raw).verify(sig, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def spki_sha256(cert: x509.Certificate) -> str:
    """Hex SHA-256 of the certificate's SubjectPublicKeyInfo (the pin an agent keeps)."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()
