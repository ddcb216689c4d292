"""MTU arithmetic for the overlay (TAP) interface.

An Ethernet frame from the TAP travels inside one UDP datagram of the underlay:

    underlay packet (<= underlay MTU)
    +-----------+-----+--------------+------------------------------------+---------+
    | IPv4 20 / | UDP | data header  | Ethernet frame (encrypted)          | AEAD    |
    | IPv6 40   |  8  | (wire.py)    | 14 B Ethernet header | L3 packet    | tag 16  |
    |           |     |              |                      |             | or 32   |
    +-----------+-----+--------------+----------------------+-------------+---------+
                                                            |<- TAP MTU ->|

The TAP MTU counts only the L3 packet; the frame carries the 14-byte Ethernet header on top
(18 with one 802.1Q tag, which enclave frames do not add themselves). So:

    overlay_mtu = underlay_mtu - ip_header - UDP(8) - data_header - tag - Ethernet(14)

Worked examples with the 16-byte data header of enclave/proto/wire.py (type u8, 3 reserved,
receiver index u32, counter u64) and the 16-byte tag:

    IPv4 underlay, MTU 1500:  1500 - 20 - 8 - 16 - 16 - 14 = 1426
    IPv6 underlay, MTU 1500:  1500 - 40 - 8 - 16 - 16 - 14 = 1406

A peer may be reached over either family and may move between paths at any time (relay first,
fallback to the relay when a direct path dies), and the platform's UDP relay puts its own 8-byte
header (wire.RELAY_HEADER_SIZE) in front of every message. So the safe default for a 1500-byte
underlay is the IPv6 figure with the relay header:

    IPv6 underlay via the UDP relay:  1500 - 40 - 8 - 8 - 16 - 16 - 14 = 1398

The largest frame the data plane then handles is 1398 + 14 = 1412 bytes, the largest UDP payload
1412 + 16 + 16 = 1444 (1452 with the relay header).
(wire.tap_mtu() does the same sum; this module adds the checks, the IPv6-safe default and
the frame/datagram sizes the loops size their buffers with.)

The tag is the largest one the agent may use with any peer, since one TAP serves all of them:
16 bytes with the default ciphers (AES256-GCM, ChaCha20-Poly1305), 32 when the agent allows
AEGIS-256 (`--cipher aegis256`, enclave.cipher.CipherChoice.max_tag_size). Allowing it
therefore lowers the default TAP MTU by 16, whichever cipher a given pair then negotiates:

    IPv6 via the relay, MTU 1500, AEGIS-256 allowed:  1500 - 40 - 8 - 8 - 16 - 32 - 14 = 1382

The default configuration (`auto`) never uses a 32-byte tag and keeps 1398.
"""

from __future__ import annotations

from typing import Final

from enclave.proto import wire

IPV4_HEADER: Final = 20
IPV6_HEADER: Final = 40
UDP_HEADER: Final = 8
RELAY_HEADER: Final[int] = wire.RELAY_HEADER_SIZE  # the UDP relay's header in front of a message
ETHERNET_HEADER: Final[int] = wire.ETHERNET_HEADER_SIZE
VLAN_TAG: Final = 4
MIN_IPV4_MTU: Final = 576  # RFC 791: every IPv4 host must accept 576-byte datagrams
MIN_IPV6_MTU: Final = 1280  # RFC 8200: IPv6 link MTU floor
DEFAULT_UNDERLAY_MTU: Final = 1500
MAX_TAP_MTU: Final = 65535


# The data header and tag sizes come from their one home, the wire module.
DATA_HEADER_LEN: Final[int] = wire.DATA_HEADER_SIZE
AEAD_TAG_LEN: Final[int] = wire.AEAD_TAG_SIZE


def tunnel_overhead(
    *, ipv6: bool, data_header: int = DATA_HEADER_LEN, tag: int = AEAD_TAG_LEN
) -> int:
    """Bytes the underlay adds around one Ethernet frame (IP + UDP + data header + tag)."""
    if data_header < 0 or tag < 0:
        raise ValueError("header and tag sizes must not be negative")
    return (IPV6_HEADER if ipv6 else IPV4_HEADER) + UDP_HEADER + data_header + tag


def overlay_mtu(
    underlay_mtu: int = DEFAULT_UNDERLAY_MTU,
    *,
    ipv6: bool = True,
    data_header: int = DATA_HEADER_LEN,
    tag: int = AEAD_TAG_LEN,
    relay: bool = False,
) -> int:
    """TAP MTU (L3 bytes per frame) that fits one datagram on an underlay of `underlay_mtu`.

    ``ipv6=True`` (the default) assumes the larger IPv6 header, which is also safe for IPv4
    paths; ``relay=True`` also leaves room for the UDP relay's header. Raises ValueError
    when the underlay is below its family's minimum MTU or leaves
    less than the IPv4 minimum of 68 bytes for the overlay.
    """
    floor = MIN_IPV6_MTU if ipv6 else MIN_IPV4_MTU
    if underlay_mtu < floor:
        raise ValueError(
            f"underlay MTU {underlay_mtu} is below the IPv{6 if ipv6 else 4} minimum of {floor}"
        )
    mtu = underlay_mtu - tunnel_overhead(ipv6=ipv6, data_header=data_header, tag=tag)
    mtu -= ETHERNET_HEADER + (RELAY_HEADER if relay else 0)
    if mtu < 68:
        raise ValueError(f"overlay MTU would be {mtu}, below the IPv4 minimum of 68")
    return min(mtu, MAX_TAP_MTU)


def max_frame_len(mtu: int, *, vlan: bool = False) -> int:
    """Largest Ethernet frame (without FCS) a TAP with this MTU produces or accepts."""
    if not 68 <= mtu <= MAX_TAP_MTU:
        raise ValueError(f"MTU {mtu} out of range 68..{MAX_TAP_MTU}")
    return mtu + ETHERNET_HEADER + (VLAN_TAG if vlan else 0)


def max_datagram_len(
    mtu: int, *, data_header: int = DATA_HEADER_LEN, tag: int = AEAD_TAG_LEN
) -> int:
    """Largest UDP payload the data plane sends for frames from a TAP with this MTU."""
    return max_frame_len(mtu) + data_header + tag


DEFAULT_OVERLAY_MTU: Final[int] = overlay_mtu(DEFAULT_UNDERLAY_MTU, ipv6=True, relay=True)


def default_overlay_mtu(max_tag: int = AEAD_TAG_LEN) -> int:
    """The agent's TAP MTU when none is configured: the IPv6-and-relay-safe figure for a
    1500-byte underlay with the largest tag it may use (1398 with 16-byte tags, 1382 with
    AEGIS-256's 32).
    """
    if max_tag not in (AEAD_TAG_LEN, wire.MAX_AEAD_TAG_SIZE):
        raise ValueError(f"no cipher has a {max_tag}-byte tag")
    return overlay_mtu(DEFAULT_UNDERLAY_MTU, ipv6=True, tag=max_tag, relay=True)
