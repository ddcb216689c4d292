"""The handshake machine: three messages, no I/O (bytes in, bytes + results out).

    initiator I                                              responder R
    -----------                                              -----------
    e_i, c_i fresh
    INIT = idx_i, ts, c_i, e_i, caps_i, cert_i,
           sig_i0 = Sign_I(L_INIT || INIT-before-sig),
           mac1 (key from R's public key), mac2   ---->
                                                             0. MAC1 (and under load MAC2) and
                                                                rate limits: enclave.proto.admission
                                                             1. parse (size limits)
                                                             2. validate_peer(cert_i): chains to the
                                                                CA, in validity, not revoked
                                                             3. intends(name_i)
                                                             4. verify sig_i0 with cert_i's key
                                                             -- only now any state is allocated --
                                                             e_r, c_r fresh, idx_r
                                                             cipher = negotiate(caps_r, caps_i)
                                          <----   RESPONSE = idx_r, idx_i, c_r, e_r, caps_r, cipher,
                                                             cert_r,
                                               sig_r = Sign_R(L_RESP || H(INIT || RESP-before-sig))
    validate_peer(cert_r), intends(name_r),
    verify sig_r; cipher allowed by caps_i and caps_r
    (acceptable); then derive keys (client)
    CONFIRM = idx_r, sig_i = Sign_I(L_CONF || H(INIT || RESPONSE))   ---->
                                                             verify sig_i; then derive keys (server)

    H = BLAKE2b-512; INIT in the transcript is the INIT body (without MAC1/MAC2).  Both
    transcript signatures cover both challenges, both ephemeral keys, both certificates, both
    capability bytes (the cipher offers), the responder's cipher choice and both indices, so a
    third party can neither downgrade nor upgrade the cipher (enclave.proto.aead); the labels
    keep a signature from being reused as another message's signature.  Keys: libsodium
    crypto_kx over the ephemeral X25519 keys, initiator = client:
    rx || tx = BLAKE2B-512(q || client_pk || server_pk).

Error contract: every function here returns None for any message it does not accept (malformed,
unknown CA, expired, revoked, unintended name, bad signature) and never raises for bad input; the
caller then stays silent.  Nothing is allocated for a stranger: the responder object is created
only after steps 1-4 succeed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import nacl.bindings as sodium
from nacl.exceptions import CryptoError
from nacl.signing import VerifyKey

from enclave.proto.aead import acceptable, negotiate
from enclave.proto.cookie import KeyedMac, mac1_key, stamp_init
from enclave.proto.keys import SessionKeys
from enclave.proto.wire import (
    CAP_KNOWN,
    CHALLENGE_SIZE,
    MAX_CERT_SIZE,
    HandshakeConfirm,
    HandshakeInit,
    HandshakeResponse,
    WireError,
    decode_confirm,
    decode_init,
    decode_response,
)

LABEL_INIT = b"enclave/handshake/init/v1"
LABEL_RESPONSE = b"enclave/handshake/response/v1"
LABEL_CONFIRM = b"enclave/handshake/confirm/v1"


class PeerIdentity(Protocol):
    """A validated certificate's identity (enclave.cert.SystemIdentity fits): what the
    handshake needs (name, public key) and what the data plane binds to the peer once the
    handshake is authenticated (MAC, overlay addresses, gateway routes)."""

    @property
    def name(self) -> str: ...

    @property
    def public_key(self) -> bytes: ...

    @property
    def serial(self) -> int: ...

    @property
    def mac(self) -> bytes: ...

    @property
    def overlay_ip(self) -> ipaddress.IPv4Address: ...

    @property
    def overlay_ip6(self) -> ipaddress.IPv6Address | None: ...

    @property
    def gateway_routes(self) -> tuple[ipaddress.IPv4Network, ...]: ...


ValidatePeer = Callable[[bytes], "PeerIdentity | None"]
"""cert DER -> identity if it chains to the CA, is in validity and not revoked; else None."""
Intends = Callable[[str], bool]
"""peer system name -> True if this side intends to talk to it."""
RandomBytes = Callable[[int], bytes]


@dataclass(frozen=True)
class LocalCredentials:
    name: str
    cert_der: bytes
    sign: Callable[[bytes], bytes]  # Ed25519 signature (64 bytes) with our private key
    caps: int  # wire.CAP_* flags: this side's cipher offer (enclave.cipher.offer_caps)
    public_key: bytes  # our certified Ed25519 public key (32 bytes): the MAC1 / cookie keys

    def __post_init__(self) -> None:
        if not 0 < len(self.cert_der) <= MAX_CERT_SIZE:
            raise ValueError(f"certificate must be 1..{MAX_CERT_SIZE} bytes")
        if len(self.public_key) != 32:
            raise ValueError("public_key must be the 32-byte Ed25519 public key")


@dataclass(frozen=True)
class HandshakeResult:
    """A completed, authenticated handshake: who the peer is and the session's keys, already
    in the shape the Node and the data plane use (SessionKeys)."""

    peer: PeerIdentity
    peer_cert: bytes
    initiator: bool
    keys: SessionKeys

    def __repr__(self) -> str:  # never print keys
        return (
            f"HandshakeResult(peer={self.peer.name!r}, initiator={self.initiator}, "
            f"keys={self.keys!r})"
        )


def transcript_hash(*parts: bytes) -> bytes:
    state = sodium.crypto_generichash_blake2b_init(digest_size=64)
    for part in parts:
        sodium.crypto_generichash_blake2b_update(state, part)
    digest: bytes = sodium.crypto_generichash_blake2b_final(state)
    return digest


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        VerifyKey(public_key).verify(message, signature)
    except (CryptoError, ValueError, TypeError):
        return False
    return True


def _validated(
    cert: bytes, validate_peer: ValidatePeer, intends: Intends
) -> PeerIdentity | None:
    try:
        ident = validate_peer(cert)
        if ident is None or not intends(ident.name):
            return None
    except Exception:  # a validator bug or odd input must not crash the node: stay silent
        return None
    return ident


def _sign(creds: LocalCredentials, message: bytes) -> bytes:
    sig = creds.sign(message)
    if len(sig) != 64:
        raise ValueError("sign() must return a 64-byte Ed25519 signature")
    return sig


class InitiatorHandshake:
    """State of one outgoing handshake.

    `responder_key` is the responder's certified Ed25519 public key (from its certificate in
    the introduction, or from the session being rekeyed): MAC1 is made with it.  `init_bytes`
    is the INIT without a cookie; `message(cookie)` the INIT with MAC2 for a cookie the
    responder sent (enclave.proto.cookie)."""

    def __init__(
        self,
        creds: LocalCredentials,
        *,
        responder_key: bytes,
        local_index: int,
        timestamp: int,
        random_bytes: RandomBytes,
    ) -> None:
        self.creds = creds
        self.local_index = local_index
        self.timestamp = timestamp
        self._eph_pk, self._eph_sk = sodium.crypto_kx_keypair()
        unsigned = HandshakeInit(
            local_index,
            timestamp,
            random_bytes(CHALLENGE_SIZE),
            self._eph_pk,
            creds.caps & CAP_KNOWN,
            creds.cert_der,
            b"",
        )
        sig = _sign(creds, LABEL_INIT + unsigned.signed_part())
        self.init = HandshakeInit(
            unsigned.sender_index,
            unsigned.timestamp,
            unsigned.challenge,
            unsigned.ephemeral,
            unsigned.caps,
            unsigned.cert,
            sig,
        )
        self.responder_key = responder_key
        self.init_body = self.init.body()  # what the transcript covers
        self.mac1 = KeyedMac(mac1_key(responder_key)).digest(self.init_body)
        self.init_bytes = stamp_init(self.init_body, self.mac1, None)

    def message(self, cookie: bytes | None) -> bytes:
        """The INIT to send: with MAC2 when we hold a cookie for the destination."""
        return self.init_bytes if cookie is None else stamp_init(self.init_body, self.mac1, cookie)

    def receive_response(
        self, data: bytes, validate_peer: ValidatePeer, intends: Intends
    ) -> tuple[bytes, HandshakeResult] | None:
        """Check a RESPONSE; on success return (CONFIRM bytes, result)."""
        try:
            resp = decode_response(data)
        except WireError:
            return None
        if resp.receiver_index != self.local_index:
            return None
        ident = _validated(resp.cert, validate_peer, intends)
        if ident is None:
            return None
        if not verify_signature(
            ident.public_key,
            resp.signature,
            LABEL_RESPONSE + transcript_hash(self.init_body, resp.signed_part()),
        ):
            return None
        cipher = acceptable(resp.cipher, self.init.caps, resp.caps)
        if cipher is None:
            return None  # a choice outside the offers: a buggy or hostile responder
        try:
            rx, tx = sodium.crypto_kx_client_session_keys(
                self._eph_pk, self._eph_sk, resp.ephemeral
            )
        except (CryptoError, ValueError, TypeError):
            return None  # e.g. a low-order ephemeral key
        sig = _sign(self.creds, LABEL_CONFIRM + transcript_hash(self.init_body, data))
        confirm = HandshakeConfirm(resp.sender_index, sig).encode()
        result = HandshakeResult(
            peer=ident,
            peer_cert=resp.cert,
            initiator=True,
            keys=SessionKeys(
                self.local_index, resp.sender_index, rx, tx, cipher,
            ),
        )
        return confirm, result


@dataclass(frozen=True)
class ValidatedInit:
    """An INIT whose certificate, intent and signature checked out (nothing allocated yet)."""

    init: HandshakeInit
    raw: bytes  # the INIT body (without MAC1/MAC2): what the transcript covers
    peer: PeerIdentity


def validate_init(
    data: bytes, validate_peer: ValidatePeer, intends: Intends
) -> ValidatedInit | None:
    """Steps 1-4 of the responder; None for anything a stranger could send.

    MAC1 / MAC2 are not checked here: the Node's InitGate (enclave.proto.admission) checks them
    before this work is spent."""
    try:
        init = decode_init(data)
    except WireError:
        return None
    ident = _validated(init.cert, validate_peer, intends)
    if ident is None:
        return None
    if not verify_signature(ident.public_key, init.signature, LABEL_INIT + init.signed_part()):
        return None
    return ValidatedInit(init, init.body(), ident)


class ResponderHandshake:
    """State of one incoming handshake, created only for a ValidatedInit."""

    def __init__(
        self,
        creds: LocalCredentials,
        validated: ValidatedInit,
        *,
        local_index: int,
        random_bytes: RandomBytes,
    ) -> None:
        self.creds = creds
        self.validated = validated
        self.local_index = local_index
        self._eph_pk, self._eph_sk = sodium.crypto_kx_keypair()
        caps = creds.caps & CAP_KNOWN
        self.cipher = negotiate(caps, validated.init.caps)
        unsigned = HandshakeResponse(
            local_index,
            validated.init.sender_index,
            random_bytes(CHALLENGE_SIZE),
            self._eph_pk,
            caps,
            self.cipher,
            creds.cert_der,
            b"",
        )
        sig = _sign(
            creds, LABEL_RESPONSE + transcript_hash(validated.raw, unsigned.signed_part())
        )
        self.response_bytes = HandshakeResponse(
            unsigned.sender_index,
            unsigned.receiver_index,
            unsigned.challenge,
            unsigned.ephemeral,
            unsigned.caps,
            unsigned.cipher,
            unsigned.cert,
            sig,
        ).encode()
        self._transcript = transcript_hash(validated.raw, self.response_bytes)

    @property
    def peer(self) -> PeerIdentity:
        return self.validated.peer

    def receive_confirm(self, data: bytes) -> HandshakeResult | None:
        try:
            confirm = decode_confirm(data)
        except WireError:
            return None
        if confirm.receiver_index != self.local_index:
            return None
        if not verify_signature(
            self.peer.public_key, confirm.signature, LABEL_CONFIRM + self._transcript
        ):
            return None
        init = self.validated.init
        try:
            rx, tx = sodium.crypto_kx_server_session_keys(
                self._eph_pk, self._eph_sk, init.ephemeral
            )
        except (CryptoError, ValueError, TypeError):
            return None
        return HandshakeResult(
            peer=self.peer,
            peer_cert=init.cert,
            initiator=False,
            keys=SessionKeys(
                self.local_index, init.sender_index, rx, tx, self.cipher,
            ),
        )
