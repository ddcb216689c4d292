"""Unspoofable inside the overlay (issue 12, item 1), with real `enclave up` agents and a real
platform: a peer that claims another system's overlay IP, by gratuitous ARP or as the source
of IPv4 packets, is dropped by the receiver's data plane and counted (rx_arp_spoofed,
rx_ip_spoofed in `enclave peers --json`); the victim keeps the right MAC for that IP and
still reaches the real system.

    plat 198.18.0.11 (platform)
          |
    +-----+------------------- inet ------------------------+
    |  m1 198.19.1.11    v1 198.19.2.11    t1 198.19.3.11    |   (no NAT)
    |  attacker M  <--session-->  victim V  <--session-->  target T
    +--------------------------------------------------------+

M writes hand-built Ethernet frames to its own TAP (an AF_PACKET socket on enclave0 in its
namespace): its agent seals them with M's key, exactly what a compromised peer can do.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest

from enclave.netlab import Host, Lab, NatType, Site, Topology
from tests.support.ident_frames import BROADCAST, ETH_ARP, ETH_IPV4, arp, eth, udp
from tests.support.lab import Agent, intents_both_ways, platform_lab, start_all
from tests.support.platform import Platform
from tests.support.traffic import ping
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root]

CONNECT_TIMEOUT = 25.0
UDP_PORT = 7777
ROUNDS = 5


@pytest.fixture(scope="module")
def world(netlab_required: None, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Lab, Platform, dict[str, Agent]]]:
    topo = Topology(sites=[Site("m", nat=NatType.NONE), Site("v", nat=NatType.NONE),
                           Site("t", nat=NatType.NONE)], public_hosts=["plat"])
    with platform_lab(topo, tmp_path_factory.mktemp("ident"), ("m1", "v1", "t1")) as w:
        start_all(w[2].values())
        yield w


def _connected(a: Agent, b: Agent) -> None:
    wait_for(lambda: a.connected(b.name), timeout=CONNECT_TIMEOUT, interval=0.2,
             what=f"{a.name} connected to {b.name}")
    wait_for(lambda: b.connected(a.name), timeout=CONNECT_TIMEOUT, interval=0.2,
             what=f"{b.name} connected to {a.name}")


def _mac(host: Host) -> bytes:
    link = json.loads(host.run(["ip", "-j", "link", "show", "enclave0"], check=True).stdout)
    return bytes.fromhex(link[0]["address"].replace(":", ""))


def _neigh_mac(host: Host, ip: str) -> str | None:
    rows = json.loads(host.run(["ip", "-j", "neigh", "show", ip, "dev", "enclave0"],
                               check=True).stdout or "[]")
    return str(rows[0]["lladdr"]) if rows and "lladdr" in rows[0] else None


def _ipv4_udp(src: str, dst: str, payload: bytes) -> bytes:
    """IPv4 + UDP with a correct header checksum (the receiving kernel checks it)."""
    body = udp(UDP_PORT, UDP_PORT, payload)
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, 64,
                                socket.IPPROTO_UDP, 0, socket.inet_aton(src),
                                socket.inet_aton(dst)))
    total = sum(struct.unpack("!10H", hdr))
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    hdr[10:12] = struct.pack("!H", ~total & 0xFFFF)
    return bytes(hdr) + body


def _received(sock: socket.socket, wait: float) -> list[tuple[bytes, str]]:
    got: list[tuple[bytes, str]] = []
    sock.settimeout(0.2)
    end = time.monotonic() + wait
    while time.monotonic() < end:
        try:
            data, addr = sock.recvfrom(2048)
        except TimeoutError:
            continue
        got.append((data, addr[0]))
    return got


def _dataplane(agent: Agent, peer: str) -> dict[str, Any]:
    """The peer's data-plane counters as the real `enclave peers --json` prints them."""
    row = next(p for p in agent.peers_cli() if p["name"] == peer)
    return dict(row.get("dataplane") or {})


def test_claiming_another_systems_overlay_ip_is_dropped_and_counted(
        world: tuple[Lab, Platform, dict[str, Agent]]) -> None:
    _lab, _plat, agents = world
    m, v, t = agents["m1"], agents["v1"], agents["t1"]
    intents_both_ways(m, v)
    intents_both_ways(t, v)
    _connected(m, v)
    _connected(t, v)
    m_mac, v_mac, t_mac = _mac(m.host), _mac(v.host), _mac(t.host)
    # V knows T's MAC from a real exchange
    assert ping(v.host, t.overlay_ip, count=3) >= 1
    assert _neigh_mac(v.host, t.overlay_ip) == ":".join(f"{b:02x}" for b in t_mac)
    time.sleep(1.2)  # past the neighbour entry's locktime, so a forged reply would be taken

    listener = v.host.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind((v.overlay_ip, UDP_PORT))
    raw = m.host.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    raw.bind(("enclave0", 0))
    forged = [
        # gratuitous ARP: "T's IP is at M's MAC", to everyone
        eth(BROADCAST, m_mac, ETH_ARP, arp(1, m_mac, t.overlay_ip, bytes(6), t.overlay_ip)),
        # ARP reply to V: the same claim
        eth(v_mac, m_mac, ETH_ARP, arp(2, m_mac, t.overlay_ip, v_mac, v.overlay_ip)),
        # IPv4 from T's overlay IP
        eth(v_mac, m_mac, ETH_IPV4, _ipv4_udp(t.overlay_ip, v.overlay_ip, b"spoofed")),
    ]
    honest = eth(v_mac, m_mac, ETH_IPV4, _ipv4_udp(m.overlay_ip, v.overlay_ip, b"honest"))
    for _ in range(ROUNDS):
        for frame in (*forged, honest):
            raw.send(frame)
        time.sleep(0.3)
    got = _received(listener, 1.0)

    # the same raw path carries M's honest packet: only the forged source is refused
    assert (b"honest", m.overlay_ip) in got
    assert not [g for g in got if g[0] == b"spoofed"], got
    assert _neigh_mac(v.host, t.overlay_ip) == ":".join(f"{b:02x}" for b in t_mac)
    assert ping(v.host, t.overlay_ip, count=3) >= 1

    def counted() -> dict[str, Any]:
        c = _dataplane(v, m.name)
        return c if (c.get("rx_arp_spoofed", 0) >= 2 * ROUNDS
                     and c.get("rx_ip_spoofed", 0) >= ROUNDS) else {}

    counters = wait_for(counted, timeout=5, interval=0.5, what="V's drop counters for M")
    assert counters["rx_spoofed"] == 0  # M used its own MAC: caught by the IP/ARP rules
    # T's own traffic to V was never taken for spoofing
    from_t = _dataplane(v, t.name)
    assert from_t["rx_ip_spoofed"] == from_t["rx_arp_spoofed"] == 0
