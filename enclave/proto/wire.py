"""Wire formats: the one home for every constant that appears on the wire.

Everything here is plain ints/bytes (the compiled fast path reads the sizes) plus small pure
encode/decode functions.  All integers are little-endian.  Every message starts with the same
4-byte word: the type byte and three reserved zero bytes (receivers drop a message whose reserved
bytes are not zero).

Message types
-------------
    1 (retired)           the INIT before MAC1/MAC2: dropped and counted (init_legacy)
    2 HANDSHAKE_RESPONSE  responder -> initiator  (certificate, challenge, ephemeral key, signature)
    3 HANDSHAKE_CONFIRM   initiator -> responder   (signature over the whole transcript)
    4 DATA                either way, an encrypted Ethernet frame   (fast path)
    5 CONTROL             either way, an encrypted control message  (keepalive, close, path probe)
    6 HANDSHAKE_INIT      initiator -> responder  (as 1, then MAC1 and MAC2: see its diagram)
    7 COOKIE_REPLY        responder -> initiator  (under load, instead of the RESPONSE)

The INIT changed its type byte when it gained MAC1/MAC2, so old and new never mis-parse each
other: a node of the old format drops type 6 (unknown type), a node of this format drops type 1.

DATA and CONTROL share one 16-byte header (the AEAD associated data) and differ only in the type
byte and in the nonce domain (see below); the fast path handles DATA and hands everything else to
Python.

Transport header (DATA / CONTROL), 16 bytes, then ciphertext, then the AEAD tag (16 bytes;
32 with AEGIS-256):

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     type      |              reserved (0, 0, 0)               |  0
    +---------------+-----------------------------------------------+
    |                 receiver index (u32 LE)                       |  4
    +---------------------------------------------------------------+
    |                                                               |  8
    +                      counter (u64 LE)                         +
    |                                                               | 12
    +---------------------------------------------------------------+
    |            ciphertext (frame / control plaintext) ...         | 16
    +---------------------------------------------------------------+
    |                 AEAD tag (16 bytes; AEGIS-256: 32)            |
    +---------------------------------------------------------------+

    AEAD nonce (12 bytes) = domain (4 bytes) || counter (u64 LE)
        DATA:    domain = 00 00 00 00   (counter owned by the fast path)
        CONTROL: domain = 01 00 00 00   (counter owned by Python; same key, disjoint nonces)
    AEGIS-256 nonce (32 bytes) = the same 12 bytes || 20 zero bytes (a counter, never random)
    AEAD associated data  = the 16 header bytes.

CONTROL plaintext: kind (u8) || body
    KEEPALIVE   1   flags u8 (bit 0: reply requested)          -> 2 bytes
    CLOSE       2   reason u8                                  -> 2 bytes
    PROBE       3   probe id u64 LE                             -> 9 bytes
    PROBE_REPLY 4   probe id u64 LE                             -> 9 bytes
    PING        5   ping id u64 LE (`enclave ping`)             -> 9 bytes
    PONG        6   ping id u64 LE, echoed                      -> 9 bytes

PROBE and PING share one plaintext layout (PROBE measures a candidate path for the path manager,
PING answers an operator's `enclave ping` on the session's current path):

     0               1                                               9
    +---------------+-----------------------------------------------+
    | kind (3,4,5,6)|            id (u64 LE)                        |
    +---------------+-----------------------------------------------+

A PONG goes back only inside the authenticated session the PING arrived in, on the path it came
from, and is as large as the PING (no amplification).

Handshake messages are drawn next to their encoders below.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum

# --- message types -------------------------------------------------------------------------
MSG_HANDSHAKE_INIT_V1 = 1  # retired: the INIT without MAC1/MAC2 (dropped, counted)
MSG_HANDSHAKE_INIT = 6
MSG_HANDSHAKE_RESPONSE = 2
MSG_HANDSHAKE_CONFIRM = 3
MSG_DATA = 4
MSG_CONTROL = 5
MSG_COOKIE_REPLY = 7
# types a peer sends to a peer (the agent hands these to the Node)
PEER_MESSAGE_TYPES = frozenset({
    MSG_HANDSHAKE_INIT_V1, MSG_HANDSHAKE_RESPONSE, MSG_HANDSHAKE_CONFIRM, MSG_DATA, MSG_CONTROL,
    MSG_HANDSHAKE_INIT, MSG_COOKIE_REPLY,
})
# discovery (agent <-> platform reflector, never between peers): layouts at the end of this file
MSG_REFLECT_REQUEST = 16
MSG_REFLECT_REPLY = 17
MSG_REFLECT_REQUEST_ALT_PORT = 18
MSG_REFLECT_REQUEST_ALT_ADDR = 19
REFLECT_REQUEST_TYPES = frozenset(
    {MSG_REFLECT_REQUEST, MSG_REFLECT_REQUEST_ALT_PORT, MSG_REFLECT_REQUEST_ALT_ADDR})

# --- control kinds (inside the encrypted CONTROL payload) -----------------------------------
CTRL_KEEPALIVE = 1
CTRL_CLOSE = 2
CTRL_PROBE = 3
CTRL_PROBE_REPLY = 4
CTRL_PING = 5
CTRL_PONG = 6
CTRL_ID_KINDS = frozenset({CTRL_PROBE, CTRL_PROBE_REPLY, CTRL_PING, CTRL_PONG})  # u64 id body
KEEPALIVE_FLAG_REPLY = 0x01

# --- sizes -----------------------------------------------------------------------------------
TYPE_WORD_SIZE = 4  # type byte + 3 reserved bytes
INDEX_SIZE = 4
COUNTER_SIZE = 8
DATA_HEADER_SIZE = 16  # type(1) reserved(3) receiver(4) counter(8)
DATA_RECEIVER_OFFSET = 4
DATA_COUNTER_OFFSET = 8
AEAD_TAG_SIZE = 16  # AES256-GCM and ChaCha20-Poly1305 (the default ciphers)
AEAD_KEY_SIZE = 32
AEAD_NONCE_SIZE = 12
AEGIS256_TAG_SIZE = 32  # crypto_aead_aegis256_ABYTES
AEGIS256_NONCE_SIZE = 32  # crypto_aead_aegis256_NPUBBYTES
MAX_AEAD_TAG_SIZE = AEGIS256_TAG_SIZE  # the largest tag any session may use
DATA_OVERHEAD = DATA_HEADER_SIZE + AEAD_TAG_SIZE  # 32 bytes per frame on top of the frame
MAX_DATA_OVERHEAD = DATA_HEADER_SIZE + MAX_AEAD_TAG_SIZE  # 48 (AEGIS-256)
NONCE_DOMAIN_DATA = b"\x00\x00\x00\x00"
NONCE_DOMAIN_CONTROL = b"\x01\x00\x00\x00"

ETHERNET_HEADER_SIZE = 14
IPV4_UDP_OVERHEAD = 20 + 8
IPV6_UDP_OVERHEAD = 40 + 8

CHALLENGE_SIZE = 32  # random nonce each side signs over
EPHEMERAL_KEY_SIZE = 32  # X25519 (crypto_kx) public key
SIGNATURE_SIZE = 64  # Ed25519
TIMESTAMP_SIZE = 8

MAC_SIZE = 16  # MAC1, MAC2 (keyed BLAKE2b-128) and the cookie
INIT_MACS_SIZE = 2 * MAC_SIZE
MAX_CERT_SIZE = 1248  # init <= 1428 bytes: fits a 1500-byte MTU over IPv6 (1452-byte UDP payload)
INIT_BODY_FIXED_SIZE = 84 + SIGNATURE_SIZE  # 148: the INIT before its MACs (signed part + sig)
INIT_FIXED_SIZE = INIT_BODY_FIXED_SIZE + INIT_MACS_SIZE  # 180
RESPONSE_FIXED_SIZE = 80 + SIGNATURE_SIZE  # 144
CONFIRM_SIZE = 8 + SIGNATURE_SIZE  # 72
MAX_HANDSHAKE_SIZE = INIT_FIXED_SIZE + MAX_CERT_SIZE  # 1428 (the response is 4 bytes smaller)
CONTROL_MAX_PLAINTEXT = 9
MAX_CONTROL_SIZE = DATA_HEADER_SIZE + CONTROL_MAX_PLAINTEXT + AEAD_TAG_SIZE
MAX_DATAGRAM_SIZE = 65535

# --- capabilities and ciphers (signed inside the handshake transcript) ------------------------
# The caps byte of INIT and RESPONSE is each side's offer (ChaCha20-Poly1305 is always offered);
# the RESPONSE's cipher byte is the responder's choice (enclave.proto.aead.negotiate).
CAP_AES256GCM_HW = 0x01  # this side has AES-NI+PCLMUL (+SSSE3) and can run AES256-GCM fast
CAP_AEGIS256 = 0x02  # this side allows AEGIS-256 (opt-in) and runs it on AES-NI
CAP_KNOWN = CAP_AES256GCM_HW | CAP_AEGIS256


class Cipher(IntEnum):
    """The AEAD a session uses; value is what the fast path gets (its C AEAD kind) and what
    the RESPONSE's cipher byte carries."""

    CHACHA20_POLY1305 = 1  # crypto_aead_chacha20poly1305_ietf
    AES256_GCM = 2  # crypto_aead_aes256gcm
    AEGIS256 = 3  # crypto_aead_aegis256 (IRTF CFRG draft; opt-in)

    @property
    def tag_size(self) -> int:
        """Bytes of AEAD tag this cipher appends."""
        return AEGIS256_TAG_SIZE if self is Cipher.AEGIS256 else AEAD_TAG_SIZE

    @property
    def nonce_size(self) -> int:
        """Bytes of nonce this cipher takes (aead_nonce pads to it)."""
        return AEGIS256_NONCE_SIZE if self is Cipher.AEGIS256 else AEAD_NONCE_SIZE


class CloseReason(IntEnum):
    """Reason byte in a CLOSE control message (and in SessionClosed events)."""

    LOCAL = 1  # intent withdrawn / shut down
    CERT_INVALID = 2  # certificate expired or revoked
    REPLACED = 3  # the session was replaced by a new one
    # the remaining reasons never travel on the wire; they describe local decisions
    REMOTE = 16  # the peer sent CLOSE
    DEAD_PEER = 17  # nothing heard for too long
    KEYS_EXPIRED = 18  # rekey failed until the keys hit their hard limit


WIRE_CLOSE_REASONS = frozenset({CloseReason.LOCAL, CloseReason.CERT_INVALID, CloseReason.REPLACED})


def tap_mtu(path_mtu: int = 1500, *, ipv6: bool = False) -> int:
    """Largest TAP MTU (Ethernet payload) whose encrypted datagram fits into `path_mtu`.

    path_mtu = IP + UDP + DATA header (16) + Ethernet header (14) + payload + tag (16)
    e.g. 1500 - 28 - 32 - 14 = 1426 over IPv4.
    """
    ip_udp = IPV6_UDP_OVERHEAD if ipv6 else IPV4_UDP_OVERHEAD
    return path_mtu - ip_udp - DATA_OVERHEAD - ETHERNET_HEADER_SIZE


class WireError(ValueError):
    """A message could not be parsed (truncated, oversized, bad reserved bytes, ...)."""


# --- transport header -------------------------------------------------------------------------
_HEADER = struct.Struct("<B3xIQ")


def message_type(data: bytes) -> int:
    """Type byte of a message, or raise WireError when the 4-byte type word is malformed."""
    if len(data) < TYPE_WORD_SIZE:
        raise WireError("message shorter than the type word")
    if data[1:4] != b"\x00\x00\x00":
        raise WireError("reserved bytes not zero")
    return data[0]


def pack_transport_header(msg_type: int, receiver: int, counter: int) -> bytes:
    return _HEADER.pack(msg_type, receiver, counter)


@dataclass(frozen=True, slots=True)
class TransportHeader:
    msg_type: int
    receiver: int
    counter: int


def unpack_transport_header(data: bytes) -> TransportHeader:
    if len(data) < DATA_HEADER_SIZE + AEAD_TAG_SIZE:
        raise WireError("transport message too short")
    if len(data) > MAX_DATAGRAM_SIZE:
        raise WireError("transport message too long")
    msg_type = message_type(data)
    if msg_type not in (MSG_DATA, MSG_CONTROL):
        raise WireError("not a transport message")
    _t, receiver, counter = _HEADER.unpack_from(data)
    return TransportHeader(msg_type, receiver, counter)


def aead_nonce(domain: bytes, counter: int, size: int = AEAD_NONCE_SIZE) -> bytes:
    """AEAD nonce: 4-byte domain || counter as u64 LE (12 bytes), zero-padded to `size`
    (AEGIS-256: 32, Cipher.nonce_size)."""
    return (domain + counter.to_bytes(COUNTER_SIZE, "little")).ljust(size, b"\x00")


# --- handshake init ---------------------------------------------------------------------------
#  0               4               8                              16
#  +-------+-------+---------------+------------------------------+
#  | 06 00 00 00   | sender index  |  timestamp (u64 LE, ns UTC)  |
#  +---------------+---------------+------------------------------+
#  | challenge_i (32 bytes)                                       |  16
#  +--------------------------------------------------------------+
#  | ephemeral X25519 public key e_i (32 bytes)                   |  48
#  +-------+-------+--------------+-------------------------------+
#  | caps  | 0     | cert len u16 | cert_i (DER, cert len bytes)  |  80, 81, 82, 84
#  +-------+-------+--------------+-------------------------------+
#  | sig_i0 = Ed25519_i(INIT_LABEL || all bytes above) (64 bytes) |  84 + cert len
#  +--------------------------------------------------------------+
#  | mac1 = BLAKE2b-128(key = mac1_key(R), all bytes above)       |  148 + cert len  (16 bytes)
#  +--------------------------------------------------------------+
#  | mac2 = BLAKE2b-128(key = cookie, all bytes above), or zeros  |  164 + cert len  (16 bytes)
#  +--------------------------------------------------------------+
#
#  mac1_key(R) = BLAKE2b-256(MAC1_LABEL || R's certified Ed25519 public key): only a party that
#  holds R's certificate (the platform hands it over with the introduction) can compute MAC1, and
#  R checks it before it spends a rate-limit token, a parse or a signature check.  MAC2 is zeros
#  unless the initiator holds a cookie from R's COOKIE_REPLY for the address it sends to (under
#  load R asks for it: the sender proves it receives at its source address).  The signature and
#  the handshake transcript cover the INIT body (everything before mac1), not the MACs.
#
#  Changes against type 1: the type byte (1 -> 6) and the 32 bytes of MACs at the end.
_INIT = struct.Struct("<B3xIQ32s32sBxH")  # 84 bytes
_ZERO_MAC = bytes(MAC_SIZE)
_INIT_TYPE_WORD = bytes([MSG_HANDSHAKE_INIT, 0, 0, 0])


@dataclass(frozen=True, slots=True)
class HandshakeInit:
    sender_index: int
    timestamp: int
    challenge: bytes
    ephemeral: bytes
    caps: int
    cert: bytes
    signature: bytes
    mac1: bytes = _ZERO_MAC
    mac2: bytes = _ZERO_MAC

    def signed_part(self) -> bytes:
        return _INIT.pack(
            MSG_HANDSHAKE_INIT,
            self.sender_index,
            self.timestamp,
            self.challenge,
            self.ephemeral,
            self.caps,
            len(self.cert),
        ) + self.cert

    def body(self) -> bytes:
        """The INIT before its MACs (what MAC1 and the transcript cover)."""
        return self.signed_part() + self.signature

    def encode(self) -> bytes:
        return self.body() + self.mac1 + self.mac2


def init_size_ok(data: bytes) -> bool:
    """Cheap shape check of an INIT (type word, sizes, cert length field) before any MAC."""
    n = len(data)
    if not INIT_FIXED_SIZE < n <= MAX_HANDSHAKE_SIZE or data[:4] != _INIT_TYPE_WORD:
        return False
    return n == INIT_FIXED_SIZE + int.from_bytes(data[82:84], "little")


def decode_init(data: bytes) -> HandshakeInit:
    if len(data) > MAX_HANDSHAKE_SIZE:
        raise WireError("handshake init too long")
    if len(data) < INIT_FIXED_SIZE:
        raise WireError("handshake init too short")
    if message_type(data) != MSG_HANDSHAKE_INIT or data[81] != 0:
        raise WireError("not a well-formed handshake init")
    _t, sender, ts, challenge, eph, caps, cert_len = _INIT.unpack_from(data)
    if cert_len == 0 or len(data) != INIT_FIXED_SIZE + cert_len:
        raise WireError("handshake init length mismatch")
    cert = data[_INIT.size : _INIT.size + cert_len]
    sig_at = _INIT.size + cert_len
    mac1_at = sig_at + SIGNATURE_SIZE
    return HandshakeInit(
        sender, ts, challenge, eph, caps, bytes(cert), bytes(data[sig_at:mac1_at]),
        bytes(data[mac1_at : mac1_at + MAC_SIZE]), bytes(data[mac1_at + MAC_SIZE :]),
    )


# --- cookie reply -------------------------------------------------------------------------------
#  Sent by a responder under load to an INIT with a valid MAC1 but no valid MAC2, instead of any
#  expensive work (64 bytes: smaller than any INIT, so it never amplifies).
#
#  0               4               8
#  +---------------+---------------+----------------------------------------------+
#  | 07 00 00 00   | receiver index| nonce (24 random bytes)                      |
#  |               | (the INIT's   |                                              |
#  |               | sender index) |                                              |  8
#  +---------------+---------------+----------------------------------------------+
#  | XChaCha20-Poly1305(key = cookie_key(R), nonce, plaintext = cookie (16 bytes), |  32
#  |                    associated data = the INIT's mac1) -> 16 + 16-byte tag     |
#  +-------------------------------------------------------------------------------+
#
#  cookie_key(R) = BLAKE2b-256(COOKIE_LABEL || R's Ed25519 public key).
#  cookie = BLAKE2b-128(key = R's secret (random, replaced every COOKIE_SECRET_LIFETIME s),
#                       the INIT's source address as R saw it): a spoofed source never sees it.
COOKIE_NONCE_SIZE = 24
COOKIE_REPLY_SIZE = 8 + COOKIE_NONCE_SIZE + MAC_SIZE + AEAD_TAG_SIZE  # 64
_COOKIE_REPLY = struct.Struct("<B3xI24s32s")


@dataclass(frozen=True, slots=True)
class CookieReply:
    receiver_index: int
    nonce: bytes
    sealed_cookie: bytes  # the cookie (16) + the AEAD tag (16)

    def encode(self) -> bytes:
        return _COOKIE_REPLY.pack(
            MSG_COOKIE_REPLY, self.receiver_index, self.nonce, self.sealed_cookie
        )


def decode_cookie_reply(data: bytes) -> CookieReply:
    if len(data) != COOKIE_REPLY_SIZE or message_type(data) != MSG_COOKIE_REPLY:
        raise WireError("not a cookie reply")
    _t, receiver, nonce, sealed = _COOKIE_REPLY.unpack(data)
    return CookieReply(receiver, nonce, sealed)


# --- handshake response -----------------------------------------------------------------------
#  0               4               8               12
#  +---------------+---------------+---------------+
#  | 02 00 00 00   | sender index  | receiver index|   (receiver = initiator's sender index)
#  +---------------+---------------+---------------+--------------+
#  | challenge_r (32 bytes)                                       |  12
#  +--------------------------------------------------------------+
#  | ephemeral X25519 public key e_r (32 bytes)                   |  44
#  +-------+-------+--------------+-------------------------------+
#  | caps  |cipher | cert len u16 | cert_r (DER)                  |  76, 77, 78, 80
#  +-------+-------+--------------+-------------------------------+
#  | sig_r = Ed25519_r(RESPONSE_LABEL || BLAKE2b-512(init || all bytes above))  (64 bytes) |
#  +--------------------------------------------------------------------------------------+
#
#  cipher: the responder's choice (a Cipher value; anything else is malformed), made from both
#  caps bytes (enclave.proto.aead.negotiate); the initiator accepts it only if both offers
#  allow it.  Signed by sig_r and, through the transcript, by the initiator's CONFIRM.  Byte 77
#  was a reserved zero before the INIT became type 6; no node of that format sees this RESPONSE.
_RESPONSE = struct.Struct("<B3xII32s32sBBH")  # 80 bytes
_CIPHER_VALUES = frozenset(int(c) for c in Cipher)


@dataclass(frozen=True, slots=True)
class HandshakeResponse:
    sender_index: int
    receiver_index: int
    challenge: bytes
    ephemeral: bytes
    caps: int
    cipher: int  # a Cipher value: the responder's choice
    cert: bytes
    signature: bytes

    def signed_part(self) -> bytes:
        return _RESPONSE.pack(
            MSG_HANDSHAKE_RESPONSE,
            self.sender_index,
            self.receiver_index,
            self.challenge,
            self.ephemeral,
            self.caps,
            self.cipher,
            len(self.cert),
        ) + self.cert

    def encode(self) -> bytes:
        return self.signed_part() + self.signature


def decode_response(data: bytes) -> HandshakeResponse:
    if len(data) > MAX_HANDSHAKE_SIZE:
        raise WireError("handshake response too long")
    if len(data) < RESPONSE_FIXED_SIZE:
        raise WireError("handshake response too short")
    if message_type(data) != MSG_HANDSHAKE_RESPONSE or data[77] not in _CIPHER_VALUES:
        raise WireError("not a well-formed handshake response")
    _t, sender, receiver, challenge, eph, caps, cipher, cert_len = _RESPONSE.unpack_from(data)
    if cert_len == 0 or len(data) != _RESPONSE.size + cert_len + SIGNATURE_SIZE:
        raise WireError("handshake response length mismatch")
    cert = data[_RESPONSE.size : _RESPONSE.size + cert_len]
    return HandshakeResponse(
        sender, receiver, challenge, eph, caps, cipher, cert, data[-SIGNATURE_SIZE:]
    )


# --- handshake confirm ------------------------------------------------------------------------
#  0               4               8
#  +---------------+---------------+------------------------------------------------------+
#  | 03 00 00 00   | receiver index| sig_i = Ed25519_i(CONFIRM_LABEL ||                   |
#  |               | (responder's) |         BLAKE2b-512(init || response)) (64 bytes)    |
#  +---------------+---------------+------------------------------------------------------+
_CONFIRM = struct.Struct("<B3xI")


@dataclass(frozen=True, slots=True)
class HandshakeConfirm:
    receiver_index: int
    signature: bytes

    def encode(self) -> bytes:
        return _CONFIRM.pack(MSG_HANDSHAKE_CONFIRM, self.receiver_index) + self.signature


def decode_confirm(data: bytes) -> HandshakeConfirm:
    if len(data) != CONFIRM_SIZE:
        raise WireError("handshake confirm has the wrong size")
    if message_type(data) != MSG_HANDSHAKE_CONFIRM:
        raise WireError("not a handshake confirm")
    _t, receiver = _CONFIRM.unpack_from(data)
    return HandshakeConfirm(receiver, data[_CONFIRM.size :])


# --- control plaintexts -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Control:
    kind: int
    value: int = 0  # flags (KEEPALIVE), reason (CLOSE) or id (PROBE / PROBE_REPLY / PING / PONG)

    def encode(self) -> bytes:
        if self.kind in CTRL_ID_KINDS:
            return bytes([self.kind]) + self.value.to_bytes(8, "little")
        return bytes([self.kind, self.value])


def decode_control(plain: bytes) -> Control:
    if not plain:
        raise WireError("empty control message")
    kind = plain[0]
    if kind in CTRL_ID_KINDS:
        if len(plain) != 9:
            raise WireError("probe / ping has the wrong size")
        return Control(kind, int.from_bytes(plain[1:], "little"))
    if kind in (CTRL_KEEPALIVE, CTRL_CLOSE):
        if len(plain) != 2:
            raise WireError("control message has the wrong size")
        return Control(kind, plain[1])
    raise WireError("unknown control kind")


# --- discovery: reflection of the public mapping (agent <-> platform) --------------------------
#
# The platform answers a signed binding request with the source address it observed, on two UDP
# ports (to tell whether the NAT mapping depends on the destination) and one TCP port. The reply is
# smaller than the request and goes only to requests signed by a known system key, so the
# reflector can never amplify.
#
# REFLECT_REQUEST (108 bytes; over TCP the same bytes, one request per connection):
#
#     0                   1                   2                   3
#     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#    +---------------+-----------------------------------------------+
#    | type 16/18/19 |              reserved (0, 0, 0)               |  0
#    +---------------+-----------------------------------------------+
#    |                 timestamp (u64 LE, unix seconds)              |  4
#    +---------------------------------------------------------------+
#    |                 nonce (16 random bytes)                       | 12
#    +---------------------------------------------------------------+
#    |                 system name (16 bytes ASCII, NUL padded)      | 28
#    +---------------------------------------------------------------+
#    |       signature (64) = Ed25519(REFLECT_DOMAIN || bytes 0..44)  | 44
#    +---------------------------------------------------------------+
#
# The type byte (signed with the rest) says where the reply comes from -- `enclave netcheck` uses
# 18 and 19 to see which unsolicited senders the NAT lets in (RFC 4787 filtering):
#    16  REFLECT_REQUEST           from the address and port the request went to
#    18  REFLECT_REQUEST_ALT_PORT  from the reflector's other UDP port (same address; UDP only)
#    19  REFLECT_REQUEST_ALT_ADDR  from the reflector's other address (UDP only; silence when it
#                                  has none -- replies say whether it has one, flag bit 0)
#
# REFLECT_REPLY (40 bytes):
#
#    +---------------+-----------------------------------------------+
#    |   type = 17   |              reserved (0, 0, 0)               |  0
#    +---------------+-----------------------------------------------+
#    |                 nonce (echoed, 16 bytes)                      |  4
#    +---------------+---------------+-------------------------------+
#    | family (4|6)  | flags         |  observed port (u16 LE)       | 20
#    +---------------+---------------+-------------------------------+
#    |   observed address (16 bytes; IPv4 in the first 4, rest 0)    | 24
#    +---------------------------------------------------------------+
REFLECT_DOMAIN = b"enclave-reflect-v1\n"
REFLECT_NONCE_SIZE = 16
REFLECT_NAME_SIZE = 16
REFLECT_SIGNED_SIZE = 44
REFLECT_REQUEST_SIZE = REFLECT_SIGNED_SIZE + SIGNATURE_SIZE  # 108
REFLECT_REPLY_SIZE = 40
REFLECT_FLAG_ALT_ADDR = 0x01  # reply flag: this reflector can answer type 19
_REFLECT_REQ = struct.Struct("<B3xQ16s16s")
_REFLECT_REPLY = struct.Struct("<B3x16sBBH16s")


@dataclass(frozen=True)
class ReflectRequest:
    timestamp: int
    nonce: bytes
    name: str
    signature: bytes
    msg_type: int = MSG_REFLECT_REQUEST  # where the reply should come from (16, 18, 19)

    def signed_bytes(self) -> bytes:
        return _REFLECT_REQ.pack(
            self.msg_type, self.timestamp, self.nonce, self.name.encode("ascii")
        )


def reflect_signed_part(
    timestamp: int, nonce: bytes, name: str, msg_type: int = MSG_REFLECT_REQUEST
) -> bytes:
    """Bytes 0..44 of a request; sign REFLECT_DOMAIN + these, then append the signature."""
    raw = name.encode("ascii")
    if len(nonce) != REFLECT_NONCE_SIZE or not 0 < len(raw) <= REFLECT_NAME_SIZE:
        raise WireError("bad reflect nonce or name")
    if msg_type not in REFLECT_REQUEST_TYPES:
        raise WireError("not a reflect request type")
    return _REFLECT_REQ.pack(msg_type, timestamp, nonce, raw)


def decode_reflect_request(data: bytes) -> ReflectRequest:
    if len(data) != REFLECT_REQUEST_SIZE or message_type(data) not in REFLECT_REQUEST_TYPES:
        raise WireError("not a reflect request")
    _t, ts, nonce, name_raw = _REFLECT_REQ.unpack_from(data)
    name_raw = name_raw.rstrip(b"\x00")
    if not name_raw or b"\x00" in name_raw or not name_raw.isascii():
        raise WireError("bad name in reflect request")
    return ReflectRequest(ts, nonce, name_raw.decode("ascii"), bytes(data[44:]), data[0])


def encode_reflect_reply(nonce: bytes, host: str, port: int, flags: int = 0) -> bytes:
    addr = ipaddress.ip_address(host)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    family = 4 if addr.version == 4 else 6
    return _REFLECT_REPLY.pack(MSG_REFLECT_REPLY, nonce, family, flags, port, addr.packed)


def reflect_reply_flags(data: bytes) -> int:
    """The flags byte of a reply that decode_reflect_reply accepted (REFLECT_FLAG_*)."""
    return data[21] if len(data) == REFLECT_REPLY_SIZE else 0


def decode_reflect_reply(data: bytes) -> tuple[bytes, str, int]:
    """(nonce, observed host, observed port)."""
    if len(data) != REFLECT_REPLY_SIZE or message_type(data) != MSG_REFLECT_REPLY:
        raise WireError("not a reflect reply")
    _t, nonce, family, _flags, port, raw = _REFLECT_REPLY.unpack(data)
    if family == 4:
        if raw[4:] != bytes(12):
            raise WireError("bad IPv4 address padding")
        host = str(ipaddress.IPv4Address(raw[:4]))
    elif family == 6:
        host = str(ipaddress.IPv6Address(raw))
    else:
        raise WireError("bad address family")
    if port == 0:
        raise WireError("bad port")
    return nonce, host, port


# --- relay of last resort (agent <-> platform relay, UDP) ---------------------------------------
#
# Every relay message starts with the common type word and a channel number: the sending agent's
# own label for one peer (it picks the number; the relay keys registrations by (address, channel)
# and rewrites the channel to the receiver's label when it forwards).  All integers little-endian.
#
#     0                   1                   2                   3
#     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#    +---------------+-----------------------------------------------+
#    |   type        |              reserved (0, 0, 0)               |  0
#    +---------------+-----------------------------------------------+
#    |                 channel (u32 LE, 1..65535)                    |  4
#    +---------------------------------------------------------------+
#
#  RELAY_REGISTER    32  header | cookie (16; zeros at first) | ticket (see below)       >= 81 bytes
#  RELAY_CHALLENGE   33  header | cookie (16)    (reply to REGISTER with a valid ticket) 24 bytes
#  RELAY_REGISTERED  34  header | lifetime (u32 LE, seconds)   (cookie was right)           12 bytes
#  RELAY_DATA        35  header | opaque enclave message (ciphertext / handshake)   8 + n bytes
#
# Ticket (minted by the platform when mutual intent holds; the relay checks it, nobody else can):
#
#    +---------------------------------------------------------------+
#    |                 expires (u64 LE, unix seconds)                |  0
#    +---------------+-----------------------------------------------+
#    | src len (u8)  | src system name (ASCII) ...                   |  8
#    +---------------+-----------------------------------------------+
#    | dst len (u8)  | dst system name (ASCII) ...                   |
#    +---------------+-----------------------------------------------+
#    |  mac = HMAC-SHA256(relay key, RELAY_TICKET_LABEL || bytes above)  (32 bytes)  |
#    +-------------------------------------------------------------------------------+
#
# The replies (CHALLENGE, REGISTERED) are smaller than the REGISTER they answer and go only to
# holders of a valid ticket; DATA is forwarded 1:1 (same size) only between two registrations
# whose tickets name each other (= mutual intent), so the relay never amplifies.
MSG_RELAY_REGISTER = 32
MSG_RELAY_CHALLENGE = 33
MSG_RELAY_REGISTERED = 34
MSG_RELAY_DATA = 35
RELAY_MESSAGE_TYPES = frozenset(
    {MSG_RELAY_REGISTER, MSG_RELAY_CHALLENGE, MSG_RELAY_REGISTERED, MSG_RELAY_DATA}
)
RELAY_HEADER_SIZE = 8
RELAY_COOKIE_SIZE = 16
RELAY_MAC_SIZE = 32
RELAY_TICKET_LABEL = b"enclave/relay-ticket/v1"
RELAY_MAX_NAME = 64
RELAY_MIN_TICKET_SIZE = 8 + 1 + 1 + 1 + 1 + RELAY_MAC_SIZE
RELAY_CHALLENGE_SIZE = RELAY_HEADER_SIZE + RELAY_COOKIE_SIZE  # 24
RELAY_REGISTERED_SIZE = RELAY_HEADER_SIZE + 4  # 12
RELAY_MAX_CHANNEL = 0xFFFF

_RELAY_HEADER = struct.Struct("<B3xI")


@dataclass(frozen=True, slots=True)
class RelayTicket:
    expires: int  # unix seconds
    src: str
    dst: str
    mac: bytes

    def signed_part(self) -> bytes:
        return relay_ticket_signed_part(self.expires, self.src, self.dst)

    def encode(self) -> bytes:
        return self.signed_part() + self.mac


def relay_ticket_signed_part(expires: int, src: str, dst: str) -> bytes:
    s, d = src.encode("ascii"), dst.encode("ascii")
    if not (0 < len(s) <= RELAY_MAX_NAME and 0 < len(d) <= RELAY_MAX_NAME):
        raise WireError("bad name in relay ticket")
    return struct.pack("<QB", expires, len(s)) + s + bytes([len(d)]) + d


def decode_relay_ticket(data: bytes) -> RelayTicket:
    if not RELAY_MIN_TICKET_SIZE <= len(data) <= 8 + 2 + 2 * RELAY_MAX_NAME + RELAY_MAC_SIZE:
        raise WireError("relay ticket has a bad size")
    expires, slen = struct.unpack_from("<QB", data)
    off = 9
    src = data[off : off + slen]
    off += slen
    if slen == 0 or len(src) != slen or off >= len(data):
        raise WireError("relay ticket truncated")
    dlen = data[off]
    dst = data[off + 1 : off + 1 + dlen]
    off += 1 + dlen
    if dlen == 0 or len(dst) != dlen or len(data) - off != RELAY_MAC_SIZE:
        raise WireError("relay ticket length mismatch")
    if not (src.isascii() and dst.isascii()) or b"\x00" in src + dst:
        raise WireError("relay ticket names not ASCII")
    return RelayTicket(expires, src.decode("ascii"), dst.decode("ascii"), bytes(data[off:]))


def pack_relay_header(msg_type: int, channel: int) -> bytes:
    return _RELAY_HEADER.pack(msg_type, channel)


def unpack_relay_header(data: bytes) -> tuple[int, int]:
    """(type, channel) of a relay message; WireError for anything else."""
    if len(data) < RELAY_HEADER_SIZE:
        raise WireError("relay message too short")
    msg_type = message_type(data)
    if msg_type not in RELAY_MESSAGE_TYPES:
        raise WireError("not a relay message")
    _t, channel = _RELAY_HEADER.unpack_from(data)
    if not 0 < channel <= RELAY_MAX_CHANNEL:
        raise WireError("bad relay channel")
    return msg_type, channel
