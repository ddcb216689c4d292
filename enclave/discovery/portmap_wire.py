"""Port mapping requests to the site's router: PCP (RFC 6887) and NAT-PMP (RFC 6886), sans I/O.

Both protocols talk UDP to the default gateway's port 5351 (SERVER_PORT); every integer is
big-endian. This module builds requests and reads replies; the agent's shell
(enclave.agent.portmap) sends them, retransmits on RETRANSMIT_S, renews and releases. A decoder
returns None for anything that is not the answer to the request it is given (too short, wrong
version, opcode, nonce, protocol or port): such a datagram is ignored, never raised on.

PCP MAP request: the common header, then the MAP payload (60 bytes in all)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +---------------+-+-------------+-------------------------------+
    |  version = 2  |R|   opcode    |         reserved (0)          |  0   R = 0: request
    +---------------+-+-------------+-------------------------------+
    |                 requested lifetime (seconds)                  |  4   0 deletes
    +---------------------------------------------------------------+
    |       client IP address (128 bits; IPv4 as ::ffff:a.b.c.d)    |  8
    +---------------------------------------------------------------+
    |                 mapping nonce (96 bits, random)               | 24   MAP payload
    +---------------+-----------------------------------------------+
    |   protocol    |                 reserved (0)                  | 36   17 = UDP
    +---------------+---------------+-------------------------------+
    |        internal port          |    suggested external port    | 40
    +-------------------------------+-------------------------------+
    |        suggested external IP address (128 bits)               | 44
    +---------------------------------------------------------------+

PCP MAP response: version, R = 1 | opcode, reserved, result code (u8), lifetime (u32), epoch
(u32), 96 reserved bits, then the MAP payload echoed with the *assigned* external port and
address. Options after the payload are ignored.

NAT-PMP (version 0)::

    public address request   0, 0                                              2 bytes
    public address response  0, 128, result u16, epoch u32, address (4)       12 bytes
    map request              0, op (1 UDP, 2 TCP), 0 u16, internal port u16,
                             suggested external port u16, lifetime u32         12 bytes
    map response             0, 128 + op, result u16, epoch u32, internal port u16,
                             mapped external port u16, lifetime u32            16 bytes

A NAT-PMP-only router answers a PCP request with version 0 and result 1 (unsupported version):
decode_pcp_map reports that as PCP_UNSUPPORTED_VERSION, and the client falls back to NAT-PMP.
Deleting a mapping: PCP MAP with lifetime 0 and the mapping's nonce; NAT-PMP map with lifetime 0
and external port 0.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

SERVER_PORT = 5351  # both protocols, on the default gateway
PCP_VERSION = 2
NATPMP_VERSION = 0
PCP_OPCODE_MAP = 1
PCP_RESPONSE_BIT = 0x80
PCP_HEADER_SIZE = 24
PCP_MAP_SIZE = 36
PCP_MAX_SIZE = 1100
PCP_NONCE_SIZE = 12
PCP_SUCCESS = 0
PCP_UNSUPPORTED_VERSION = 1
IPPROTO_UDP = 17
IPPROTO_TCP = 6
NATPMP_OP_ADDRESS = 0
NATPMP_OP_MAP_UDP = 1
NATPMP_OP_MAP_TCP = 2
NATPMP_RESPONSE_BIT = 0x80
NATPMP_SUCCESS = 0
NATPMP_UNSUPPORTED_VERSION = 1
NATPMP_ADDRESS_RESPONSE_SIZE = 12
NATPMP_MAP_RESPONSE_SIZE = 16

# What the agent asks for and how patiently (RFC 6886 3.1 starts at 250 ms and doubles; fewer
# tries than it allows, so a router without the protocol costs at most ~2 s per protocol).
LIFETIME_S = 3600
RETRANSMIT_S = (0.25, 0.5, 1.0)  # waits after each send; one send per entry
MIN_RENEW_S = 30.0  # never renew more often, whatever lifetime the router grants

_V4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"
_PCP_MAP = struct.Struct("!B3xHH16s")  # protocol, internal port, external port, external IP
_PCP_HEADER_REPLY = struct.Struct("!BBxBII12x")  # version, R|op, result, lifetime, epoch


@dataclass(frozen=True)
class Granted:
    """A mapping the router granted: where the internet reaches the internal port."""

    external_ip: str
    external_port: int
    lifetime: int  # seconds; 0 acknowledges a deletion
    epoch: int  # the server's epoch (seconds since its state began)


@dataclass(frozen=True)
class Refused:
    """The router answered the request with a result code other than success."""

    result: int


Reply = Granted | Refused


def ip_to_16(ip: str) -> bytes:
    """128-bit form of an address (IPv4 as an IPv4-mapped IPv6 address), as PCP carries it."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv4Address):
        return _V4_MAPPED_PREFIX + addr.packed
    return addr.packed


def ip_from_16(raw: bytes) -> str:
    if raw[:12] == _V4_MAPPED_PREFIX:
        return str(ipaddress.IPv4Address(raw[12:]))
    return str(ipaddress.IPv6Address(raw))


# -- PCP ------------------------------------------------------------------------------------------


def encode_pcp_map(nonce: bytes, client_ip: str, internal_port: int, lifetime: int, *,
                   protocol: int = IPPROTO_UDP, external_port: int = 0,
                   external_ip: str = "0.0.0.0") -> bytes:
    """A PCP MAP request (60 bytes). `external_port`/`external_ip` are suggestions (0 and the
    unspecified address: no preference); `lifetime` 0 deletes the mapping `nonce` names."""
    if len(nonce) != PCP_NONCE_SIZE:
        raise ValueError("PCP mapping nonce must be 12 bytes")
    header = struct.pack("!BBHI", PCP_VERSION, PCP_OPCODE_MAP, 0, lifetime) + ip_to_16(client_ip)
    return header + nonce + _PCP_MAP.pack(protocol, internal_port, external_port,
                                          ip_to_16(external_ip))


def decode_pcp_map(data: bytes, nonce: bytes, internal_port: int, *,
                   protocol: int = IPPROTO_UDP) -> Reply | None:
    """The reply to the MAP request with `nonce` for `internal_port`, or None to ignore `data`.

    A NAT-PMP server's "unsupported version" answer is Refused(PCP_UNSUPPORTED_VERSION). A PCP
    error reply need not echo the MAP payload (RFC 6887 8.3), so a refusal is accepted with
    just the header; a success must echo the nonce, protocol and internal port."""
    if len(data) >= 4 and data[0] == NATPMP_VERSION:
        # a NAT-PMP server: version 0, opcode 128 + ours, result u16
        if (data[1] & NATPMP_RESPONSE_BIT
                and struct.unpack_from("!H", data, 2)[0] == NATPMP_UNSUPPORTED_VERSION):
            return Refused(PCP_UNSUPPORTED_VERSION)
        return None
    if (len(data) < PCP_HEADER_SIZE or len(data) > PCP_MAX_SIZE or len(data) % 4
            or data[0] != PCP_VERSION):
        return None
    _version, op, result, lifetime, epoch = _PCP_HEADER_REPLY.unpack_from(data)
    if op != PCP_RESPONSE_BIT | PCP_OPCODE_MAP:
        return None
    if len(data) < PCP_HEADER_SIZE + PCP_MAP_SIZE:
        return Refused(result) if result != PCP_SUCCESS else None
    got_nonce = data[PCP_HEADER_SIZE:PCP_HEADER_SIZE + PCP_NONCE_SIZE]
    proto, iport, eport, eip = _PCP_MAP.unpack_from(data, PCP_HEADER_SIZE + PCP_NONCE_SIZE)
    if got_nonce != nonce or proto != protocol or iport != internal_port:
        return None
    if result != PCP_SUCCESS:
        return Refused(result)
    if lifetime and not 0 < eport < 65536:
        return None
    return Granted(ip_from_16(eip), eport, lifetime, epoch)


# -- NAT-PMP --------------------------------------------------------------------------------------


def encode_natpmp_address() -> bytes:
    """The NAT-PMP request for the router's public address."""
    return bytes((NATPMP_VERSION, NATPMP_OP_ADDRESS))


def decode_natpmp_address(data: bytes) -> tuple[int, str, int] | None:
    """(result, public address, epoch) of a public address response, or None to ignore."""
    if (len(data) < NATPMP_ADDRESS_RESPONSE_SIZE or data[0] != NATPMP_VERSION
            or data[1] != NATPMP_RESPONSE_BIT | NATPMP_OP_ADDRESS):
        return None
    result, epoch = struct.unpack_from("!HI", data, 2)
    return result, str(ipaddress.IPv4Address(data[8:12])), epoch


def encode_natpmp_map(internal_port: int, lifetime: int, *, external_port: int | None = None,
                      tcp: bool = False) -> bytes:
    """A NAT-PMP map request; lifetime 0 deletes (and then the external port is sent as 0)."""
    suggested = 0 if lifetime == 0 else (internal_port if external_port is None
                                         else external_port)
    op = NATPMP_OP_MAP_TCP if tcp else NATPMP_OP_MAP_UDP
    return struct.pack("!BBHHHI", NATPMP_VERSION, op, 0, internal_port, suggested, lifetime)


def decode_natpmp_map(data: bytes, internal_port: int, external_ip: str, *,
                      tcp: bool = False) -> Reply | None:
    """The reply to a map request for `internal_port`, or None to ignore `data`. NAT-PMP's map
    response carries no address: `external_ip` is the public address asked for before."""
    op = NATPMP_OP_MAP_TCP if tcp else NATPMP_OP_MAP_UDP
    if len(data) < 4 or data[0] != NATPMP_VERSION or data[1] != NATPMP_RESPONSE_BIT | op:
        return None
    result = struct.unpack_from("!H", data, 2)[0]
    if result != NATPMP_SUCCESS:
        return Refused(result)
    if len(data) < NATPMP_MAP_RESPONSE_SIZE:
        return None
    epoch, iport, eport, lifetime = struct.unpack_from("!IHHI", data, 4)
    if iport != internal_port or (lifetime and eport == 0):
        return None
    return Granted(external_ip, eport, lifetime, epoch)


def renew_after(lifetime: int) -> float:
    """Seconds after a grant to renew it: half its lifetime, at least MIN_RENEW_S."""
    return max(MIN_RENEW_S, lifetime / 2)
