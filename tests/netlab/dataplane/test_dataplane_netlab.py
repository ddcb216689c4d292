"""The compiled data plane between netlab hosts, with static test keys (tests/support/overlay.py).

    pa (100.64.0.1, 02:..:01)  <--UDP 51820-->  pb (100.64.0.2, 02:..:02)  <-->  pc (100.64.0.3)
    every pair has a session; the DataPlane threads of all hosts run in this process.

L2 semantics (ARP, IPv4, IPv6 + ND from the EUI-64 link-local addresses, ICMP, TCP, UDP,
broadcast, multicast, raw EtherType),
path-MTU (ICMP generated in C), offload on and off, UDP GSO with software segmentation
on the veth (gso_max_segs 1, the `ethtool -K tx-udp-segmentation off` equivalent here).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator

import pytest

from enclave.netlab import Lab, Topology
from enclave.proto.wire import Cipher
from tests.support.ident_frames import link_local
from tests.support.overlay import (
    LOCAL_ETHERTYPE,
    Overlay,
    frame_socket,
    overlay_mac,
    tcp_transfer,
    udp_roundtrip,
)
from tests.support.traffic import ping
from tests.support.wait import wait_for

fp = pytest.importorskip("enclave._fastpath")

pytestmark = [pytest.mark.netlab, pytest.mark.root]

OFFLOAD = [pytest.param(True, id="offload"), pytest.param(False, id="no-offload")]


@pytest.fixture
def lab3(lab_factory: Callable[..., Lab]) -> Lab:
    return lab_factory(Topology(public_hosts=["pa", "pb", "pc"]))


@pytest.fixture
def make_overlay(lab3: Lab) -> Iterator[Callable[..., Overlay]]:
    made: list[Overlay] = []

    def make(n: int = 2, **kw: object) -> Overlay:
        ov = Overlay(lab3, lab3.hosts[:n], **kw)  # type: ignore[arg-type]
        made.append(ov)
        ov.mesh()
        return ov

    yield make
    for ov in made:
        ov.close()


# --- tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("offload", OFFLOAD)
@pytest.mark.parametrize(
    "cipher", [Cipher.AES256_GCM, Cipher.CHACHA20_POLY1305], ids=["aes", "chacha"]
)
def test_arp_icmp_udp_tcp_cross(
    make_overlay: Callable[..., Overlay], offload: bool, cipher: Cipher
) -> None:
    ov = make_overlay(2, offload=offload, cipher=cipher)
    a, b = ov.members
    assert udp_roundtrip(a, b, b"hello over the overlay") == b"hello over the overlay"
    assert ping(a.host, b.ip, count=6, timeout=0.5, size=56)  # raw ICMP: no ping binary here
    sent, got = tcp_transfer(a, b, 4 << 20)
    assert sent == got
    ca, cb = a.dp.peer_counters("pb"), b.dp.peer_counters("pa")
    assert ca["tx_frames"] > 0 and cb["rx_frames"] > 0
    for c in (ca, cb):
        assert c["rx_decrypt_fail"] == c["rx_replay"] == c["rx_spoofed"] == 0
        assert c["tx_send_errors"] == 0
    g = a.dp.global_counters()
    assert g["vnet_hdr"] is offload and g["udp_gso"] is offload
    if offload:
        assert g["gso_messages"] > 0  # the 4 MB TCP stream went out as UDP GSO runs
        assert b.dp.global_counters()["rx_gro_datagrams"] > 0
    # neighbours learnt through ARP over the overlay carry the certified MACs
    neigh = a.host.run(["ip", "neigh", "show", b.ip, "dev", "enclave0"]).stdout
    assert ":".join(f"{x:02x}" for x in overlay_mac(1)) in neigh


def test_udp_gso_with_software_segmentation(make_overlay: Callable[..., Overlay]) -> None:
    """gso_max_segs 1 on the sender's veth: the kernel must cut our GSO runs itself."""
    ov = make_overlay(2, offload=True)
    a, b = ov.members
    a.host.run(["ip", "link", "set", "dev", "eth0", "gso_max_segs", "1"], check=True)
    sent, got = tcp_transfer(a, b, 2 << 20)
    assert sent == got
    assert a.dp.global_counters()["gso_messages"] > 0
    assert b.dp.peer_counters("pa")["rx_decrypt_fail"] == 0


def test_ipv6_neighbour_discovery_and_udp(make_overlay: Callable[..., Overlay]) -> None:
    """IPv6 crosses from the link-local addresses the TAPs derive from their certified MACs
    (EUI-64): neighbour discovery resolves and UDP arrives. An overlay IPv6 no certificate
    names (fd00::/64 here) does not cross: the receiver counts it as rx_ip_spoofed."""
    ov = make_overlay(2, offload=True, ipv6=True)
    a, b = ov.members
    b_ll = link_local(overlay_mac(1))
    rs = b.host.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    wait_for(lambda: _bound(rs, (b_ll, 6000, 0, b.tap.ifindex)), timeout=10,
             what="b's link-local address out of duplicate address detection")
    rs.settimeout(0.3)
    ss = a.host.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    got = None
    for _ in range(30):
        with contextlib.suppress(OSError):  # a's own link-local may still be tentative
            ss.sendto(b"v6 payload", (b_ll, 6000, 0, a.tap.ifindex))
        try:
            got = rs.recv(100)
            break
        except TimeoutError:
            continue
    assert got == b"v6 payload"
    neigh = a.host.run(["ip", "-6", "neigh", "show", b_ll, "dev", "enclave0"]).stdout
    assert "02:00:00:00:00:02" in neigh  # resolved by neighbour discovery over the overlay
    # fd00::1 -> fd00::2: not certified, so neither its neighbour solicitation nor its data
    rs2 = b.host.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    rs2.bind(("fd00::2", 6001))
    rs2.settimeout(0.3)
    for _ in range(5):
        ss.sendto(b"uncertified", ("fd00::2", 6001))
        with pytest.raises(TimeoutError):
            rs2.recv(100)
    assert b.dp.peer_counters("pa")["rx_ip_spoofed"] > 0


def _bound(sock: socket.socket, addr: tuple[str, int, int, int]) -> bool:
    try:
        sock.bind(addr)
    except OSError:
        return False
    return True


def test_broadcast_multicast_and_learning(make_overlay: Callable[..., Overlay]) -> None:
    ov = make_overlay(3, offload=False)
    a, b, c = ov.members
    # broadcast reaches every peer
    receivers = []
    for m in (b, c):
        s = m.host.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.bind(("0.0.0.0", 7000))
        s.settimeout(2)
        receivers.append(s)
    tx = a.host.socket()
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"enclave0")
    tx.sendto(b"to everyone", ("100.127.255.255", 7000))
    assert [s.recv(100) for s in receivers] == [b"to everyone"] * 2
    # multicast to a group reaches the members
    group = "239.1.2.3"
    msocks = []
    for m in (b, c):
        s = m.host.socket()
        s.bind(("0.0.0.0", 7001))
        mreq = socket.inet_aton(group) + socket.inet_aton(m.ip)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        s.settimeout(2)
        msocks.append(s)
    mt = a.host.socket()
    mt.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(a.ip))
    mt.sendto(b"to the group", (group, 7001))
    assert [s.recv(100) for s in msocks] == [b"to the group"] * 2
    assert a.dp.global_counters()["tx_flooded"] >= 2
    # after learning, unicast a -> b is not copied to c
    assert udp_roundtrip(a, b, b"x") == b"x"
    before = c.dp.peer_counters("pa")["rx_frames"]
    for _ in range(20):
        assert udp_roundtrip(a, b, b"unicast") == b"unicast"
    assert c.dp.peer_counters("pa")["rx_frames"] == before


def test_raw_ethertype_crosses_byte_for_byte(make_overlay: Callable[..., Overlay]) -> None:
    ov = make_overlay(2, offload=True)
    a, b = ov.members
    rx, tx = frame_socket(b), frame_socket(a)
    rx.settimeout(3)
    frame = overlay_mac(1) + overlay_mac(0) + struct.pack("!H", LOCAL_ETHERTYPE) + os.urandom(333)
    tx.send(frame)
    assert rx.recv(2048) == frame


@pytest.mark.parametrize("offload", OFFLOAD)
def test_oversized_frames_get_icmp_frag_needed(
    make_overlay: Callable[..., Overlay], offload: bool
) -> None:
    """TAP MTU 1500 over a data plane that carries 1200: DF packets learn the path MTU."""
    ov = make_overlay(2, offload=offload, mtu=1200, tap_mtu=1500)
    a, b = ov.members
    assert udp_roundtrip(a, b, b"small") == b"small"
    s = a.host.socket()
    s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO
    s.connect((b.ip, 5002))
    assert s.getsockopt(socket.IPPROTO_IP, 14) == 1500  # IP_MTU
    try:
        s.send(os.urandom(1400))
    except OSError:
        pass

    def learnt() -> bool:
        try:
            return s.getsockopt(socket.IPPROTO_IP, 14) == 1200
        except OSError:
            return False

    wait_for(learnt, 3, what="path MTU 1200 learnt from the ICMP the data plane wrote")
    g = a.dp.global_counters()
    assert g["tx_oversize"] >= 1 and g["icmp_sent"] >= 1
    with pytest.raises(OSError):
        s.send(os.urandom(1400))  # the kernel now refuses locally: EMSGSIZE
    # TCP adapts (MSS clamped by the learnt PMTU) and still delivers everything
    sent, got = tcp_transfer(a, b, 1 << 20)
    assert sent == got


def test_stop_is_prompt_and_leaves_nothing(make_overlay: Callable[..., Overlay]) -> None:
    ov = make_overlay(2, offload=True)
    a, b = ov.members
    assert udp_roundtrip(a, b, b"x") == b"x"
    t0 = time.monotonic()
    a.dp.stop()
    assert time.monotonic() - t0 < 3.0  # woken through the eventfd, not a poll timeout
    assert not a.dp.native.running
    assert a.dp.native.reclaim() == 0
