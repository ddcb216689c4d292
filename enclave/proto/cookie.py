"""MAC1, MAC2 and cookies: handshakes a stranger cannot make us work for (WireGuard's idea).

Pure: no I/O, no clock (`now` is passed in), randomness injected.  Layouts in wire.py (INIT,
COOKIE_REPLY).

    initiator I (holds R's certificate          responder R
    from the introduction)
    ------------------------------              -----------
    INIT body | mac1 | mac2 (zeros)   ---->     1. mac1 = MAC(mac1_key(R), body)?  else drop, count
                                                   (one keyed BLAKE2b: no token, parse or signature)
                                                2. under load and no valid mac2:
                                    <----          COOKIE_REPLY (cookie sealed to I, AD = mac1)
    keep the cookie for that address            3. otherwise: rate limits, then parse, certificate,
    INIT body | mac1 | mac2 = MAC(cookie, ..)      signature (enclave.proto.handshake)
                                      ---->

    mac1_key(R)   = BLAKE2b-256(MAC1_LABEL || R's Ed25519 public key)
    cookie_key(R) = BLAKE2b-256(COOKIE_LABEL || R's Ed25519 public key)
    cookie        = BLAKE2b-128(key = R's secret, source address bytes); the secret is random and
                    replaced every COOKIE_SECRET_LIFETIME seconds, so a cookie expires with it.

A spoofed source never receives its cookie, so under load it never gets past step 2; its whole
cost is one BLAKE2b and one small XChaCha20-Poly1305 seal, and the reply (64 bytes) is smaller
than the INIT it answers.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Callable, Hashable

import nacl.bindings as sodium
from nacl.exceptions import CryptoError

from enclave.proto import timing as T
from enclave.proto.wire import (
    COOKIE_NONCE_SIZE,
    INIT_MACS_SIZE,
    MAC_SIZE,
    CookieReply,
    WireError,
    decode_cookie_reply,
    init_size_ok,
)

MAC1_LABEL = b"enclave/mac1/v1"
COOKIE_LABEL = b"enclave/cookie/v1"
COOKIE_JAR_SIZE = 16  # addresses an initiator keeps a cookie for, per peer (LRU)

RandomBytes = Callable[[int], bytes]


def _derive(label: bytes, public_key: bytes) -> bytes:
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key has 32 bytes")
    return hashlib.blake2b(label + public_key, digest_size=32).digest()


def mac1_key(public_key: bytes) -> bytes:
    return _derive(MAC1_LABEL, public_key)


def cookie_key(public_key: bytes) -> bytes:
    return _derive(COOKIE_LABEL, public_key)


class KeyedMac:
    """BLAKE2b-128 under one key; the key schedule is done once (copy per message)."""

    __slots__ = ("_base",)

    def __init__(self, key: bytes) -> None:
        self._base = hashlib.blake2b(key=key, digest_size=MAC_SIZE)

    def digest(self, data: bytes | memoryview) -> bytes:
        h = self._base.copy()
        h.update(data)
        return h.digest()


def stamp_init(body: bytes, mac1: bytes, cookie: bytes | None) -> bytes:
    """The INIT as sent: body | mac1 | mac2 (zeros without a cookie)."""
    msg = body + mac1
    if cookie is None:
        return msg + bytes(MAC_SIZE)
    return msg + KeyedMac(cookie).digest(msg)


class CookieChecker:
    """The responder's side: MAC1 and MAC2 checks, cookie replies."""

    def __init__(self, public_key: bytes, random_bytes: RandomBytes) -> None:
        self._mac1 = KeyedMac(mac1_key(public_key))
        self._seal_key = cookie_key(public_key)
        self._random_bytes = random_bytes
        self._secret: KeyedMac | None = None
        self._secret_at = 0.0

    def check_mac1(self, msg: bytes) -> bool:
        """True for an INIT whose shape is right and whose MAC1 was made with our key."""
        if not init_size_ok(msg):
            return False
        view = memoryview(msg)
        end = len(msg) - INIT_MACS_SIZE
        return hmac.compare_digest(self._mac1.digest(view[:end]), view[end : end + MAC_SIZE])

    def check_mac2(self, msg: bytes, source: bytes, now: float) -> bool:
        """True when MAC2 was made with the cookie of `source` under the current secret
        (call only after check_mac1)."""
        view = memoryview(msg)
        end = len(msg) - MAC_SIZE
        mac2 = view[end:]
        if not any(mac2):
            return False
        return hmac.compare_digest(KeyedMac(self._cookie(source, now)).digest(view[:end]), mac2)

    def reply(self, msg: bytes, source: bytes, now: float) -> bytes:
        """COOKIE_REPLY to an INIT with a valid MAC1 (call only after check_mac1)."""
        end = len(msg) - INIT_MACS_SIZE
        mac1 = msg[end : end + MAC_SIZE]
        nonce = self._random_bytes(COOKIE_NONCE_SIZE)
        sealed = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
            self._cookie(source, now), mac1, nonce, self._seal_key
        )
        sender_index = int.from_bytes(msg[4:8], "little")
        return CookieReply(sender_index, nonce, sealed).encode()

    def _cookie(self, source: bytes, now: float) -> bytes:
        if self._secret is None or now - self._secret_at >= T.COOKIE_SECRET_LIFETIME:
            self._secret = KeyedMac(self._random_bytes(32))
            self._secret_at = now
        return self._secret.digest(source)


def open_cookie_reply(data: bytes, responder_key: bytes, mac1: bytes) -> tuple[int, bytes] | None:
    """(receiver index, cookie) of a COOKIE_REPLY sealed by the responder whose public key is
    `responder_key` for the INIT whose MAC1 was `mac1`; None for anything else (never raises)."""
    try:
        reply = decode_cookie_reply(data)
        cookie = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            reply.sealed_cookie, mac1, reply.nonce, cookie_key(responder_key)
        )
    except (WireError, CryptoError, ValueError, TypeError):
        return None
    if len(cookie) != MAC_SIZE:
        return None
    return reply.receiver_index, bytes(cookie)


class CookieJar:
    """The initiator's cookies from one responder, by the address they are good for."""

    def __init__(self) -> None:
        self._cookies: OrderedDict[Hashable, tuple[bytes, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._cookies)

    def store(self, addr: Hashable, cookie: bytes, now: float) -> bool:
        """Keep `cookie` for `addr`; True when it is new (not the one already held)."""
        old = self._cookies.get(addr)
        self._cookies[addr] = (cookie, now)
        self._cookies.move_to_end(addr)
        while len(self._cookies) > COOKIE_JAR_SIZE:
            self._cookies.popitem(last=False)
        return old is None or old[0] != cookie

    def get(self, addr: Hashable, now: float) -> bytes | None:
        got = self._cookies.get(addr)
        if got is None:
            return None
        cookie, at = got
        if now - at >= T.COOKIE_LIFETIME or now < at:
            del self._cookies[addr]
            return None
        return cookie
