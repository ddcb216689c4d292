"""The compiled data plane with AEGIS-256 sessions between netlab hosts (static test keys,
tests/support/overlay.py), offloads on and off: UDP, ICMP and a TCP stream cross, every DATA
datagram carries a 32-byte tag, and a full-size frame (TAP MTU 1390) fits 1452 bytes of UDP.

    pa (100.64.0.1)  <--UDP 51820, AEGIS-256-->  pb (100.64.0.2)
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from enclave.netlab import Lab, Topology
from enclave.proto.wire import DATA_HEADER_SIZE, Cipher
from tests.support.overlay import (
    PORT,
    Overlay,
    mac_str,
    overlay_mac,
    tcp_transfer,
    udp_roundtrip,
)

fp = pytest.importorskip("enclave._fastpath")

pytestmark = [
    pytest.mark.netlab, pytest.mark.root,
    pytest.mark.skipif(not fp.aegis256_available(), reason="no AES-NI AEGIS-256 here"),
]
AEGIS_MTU = 1390


@pytest.fixture
def overlay(lab_factory: Callable[..., Lab], request: pytest.FixtureRequest) -> Iterator[Overlay]:
    lab = lab_factory(Topology(public_hosts=["pa", "pb"]))
    with Overlay(lab, lab.hosts[:2], offload=request.param, cipher=Cipher.AEGIS256,
                 mtu=AEGIS_MTU) as ov:
        ov.mesh()
        yield ov


@pytest.mark.parametrize("overlay", [True, False], ids=["offload", "no-offload"], indirect=True)
def test_aegis_sessions_carry_traffic(overlay: Overlay) -> None:
    a, b = overlay.members
    assert udp_roundtrip(a, b, b"aegis") == b"aegis"
    big = bytes(range(256)) * 5 + b"x" * (AEGIS_MTU - 28 - 1280)  # a full-MTU IP packet
    assert udp_roundtrip(b, a, big) == big
    sent, got = tcp_transfer(a, b, 4 << 20)
    assert sent == got
    for x, peer in ((a, "pb"), (b, "pa")):
        c = x.dp.peer_counters(peer)
        assert c["rx_frames"] > 0 and c["tx_frames"] > 0
        assert c["rx_decrypt_fail"] == c["rx_runt"] == c["rx_spoofed"] == 0
        assert c["tx_send_errors"] == 0


@pytest.mark.parametrize("overlay", [False], ids=["no-offload"], indirect=True)
def test_datagrams_carry_a_32_byte_tag(overlay: Overlay) -> None:
    """A frame sent from a's TAP reaches b's UDP port as header + frame + 32-byte tag: capture
    it by sending to a listener that stands in for b (same address, same port)."""
    a, b = overlay.members
    b.dp.close()  # b's data plane stops reading; its socket stays bound to the port
    b.sock.close()
    spy = b.host.socket(socket.AF_INET, socket.SOCK_DGRAM)
    spy.bind((str(b.host.ip), PORT))
    spy.settimeout(5)
    payload = b"y" * (AEGIS_MTU - 28)
    s = a.host.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.host.run(["ip", "neigh", "replace", b.ip, "lladdr", mac_str(overlay_mac(b.n)), "dev",
                "enclave0"], check=True)  # no ARP round trip: b's side no longer answers
    s.sendto(payload, (b.ip, 5000))
    data = spy.recv(65535)
    frame = 14 + AEGIS_MTU
    assert data[0] == 4 and len(data) == DATA_HEADER_SIZE + frame + 32 == 1452
