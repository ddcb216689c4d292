"""MTU arithmetic (enclave/dataplane/mtu.py): the documented worked examples and the limits."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from enclave.dataplane import mtu
from enclave.proto import wire


def test_worked_examples_for_a_1500_byte_underlay() -> None:
    # 1500 - IPv4 20 - UDP 8 - data header 16 - tag 16 - Ethernet 14
    assert mtu.overlay_mtu(1500, ipv6=False) == 1426
    # 1500 - IPv6 40 - UDP 8 - data header 16 - tag 16 - Ethernet 14
    assert mtu.overlay_mtu(1500, ipv6=True) == 1406
    # the default also leaves room for the UDP relay's 8-byte header (IPv6- and relay-safe)
    assert mtu.overlay_mtu(1500, ipv6=True, relay=True) == 1398
    assert mtu.DEFAULT_OVERLAY_MTU == 1398
    assert mtu.max_datagram_len(1398) + mtu.RELAY_HEADER + 40 + 8 == 1500
    assert mtu.max_frame_len(1406) == 1420
    assert mtu.max_frame_len(1406, vlan=True) == 1424
    assert mtu.max_datagram_len(1406) == 1452
    # the largest datagram plus the IPv6 + UDP headers fills the underlay exactly
    assert mtu.max_datagram_len(1406) + 40 + 8 == 1500
    assert mtu.max_datagram_len(1426) + 20 + 8 == 1500


def test_sizes_come_from_the_wire_module() -> None:
    assert mtu.DATA_HEADER_LEN == wire.DATA_HEADER_SIZE
    assert mtu.AEAD_TAG_LEN == wire.AEAD_TAG_SIZE
    for underlay in (1280, 1420, 1500, 9000):
        assert mtu.overlay_mtu(underlay, ipv6=False) == wire.tap_mtu(underlay, ipv6=False)
        assert mtu.overlay_mtu(underlay, ipv6=True) == wire.tap_mtu(underlay, ipv6=True)


@pytest.mark.parametrize(
    ("underlay", "ipv6", "header", "want"),
    [
        (9000, False, 16, 8926),
        (9000, True, 16, 8906),
        (1500, False, 13, 1429),  # a 13-byte header (no reserved bytes) would give 3 more
        (1280, True, 16, 1186),  # the IPv6 minimum link MTU still leaves a usable overlay
        (576, False, 16, 502),
        (65535, False, 0, 65535 - 20 - 8 - 16 - 14),
    ],
)
def test_parameterised(underlay: int, ipv6: bool, header: int, want: int) -> None:
    assert mtu.overlay_mtu(underlay, ipv6=ipv6, data_header=header) == want
    assert mtu.tunnel_overhead(ipv6=ipv6, data_header=header) == underlay - want - 14


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: mtu.overlay_mtu(1279, ipv6=True), "below the IPv6 minimum"),
        (lambda: mtu.overlay_mtu(575, ipv6=False), "below the IPv4 minimum"),
        (lambda: mtu.overlay_mtu(600, ipv6=False, data_header=500), "below the IPv4 minimum of 68"),
        (lambda: mtu.tunnel_overhead(ipv6=False, data_header=-1), "negative"),
        (lambda: mtu.max_frame_len(67), "out of range"),
        (lambda: mtu.max_frame_len(65536), "out of range"),
    ],
)
def test_rejects_impossible_values(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
