"""Every system's derived overlay IPv6 (enclave.cert.overlay6), end to end with real `enclave up`
agents and a real platform:

    plat 198.18.0.11 (platform)
          |
    +-----+------------------- inet ------------------------+
    |  m1 198.19.1.11    v1 198.19.2.11    t1 198.19.3.11    |   (no NAT)
    |  attacker M  <--session-->  victim V  <--session-->  target T
    +--------------------------------------------------------+

* `enclave status --json` names each agent's overlay IPv6, the one its TAP holds;
* V and T ping each other's overlay IPv6 (Neighbour Discovery crosses the overlay: the
  solicitation is flooded as multicast, the advertisement's target is certified);
* V's DNS answers AAAA with the derived addresses, asked over IPv4 and over IPv6;
* M (a compromised peer: hand-built frames on its own TAP, sealed with its key) sends UDP from
  T's overlay IPv6 and advertises T's overlay IPv6 at its own MAC: V's data plane drops both
  (rx_ip_spoofed), keeps T's neighbour entry, and takes M's honest IPv6 packet.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import dns.message
import dns.query
import pytest

from enclave.netlab import Host, Lab, NatType, Site, Topology
from tests.support.frames6 import udp6
from tests.support.ident_frames import (
    ETH_IPV6,
    ND_OPT_TLLA,
    eth,
    icmp6_na,
    ipv6,
    nd_option,
)
from tests.support.lab import Agent, intents_both_ways, platform_lab, start_all
from tests.support.platform import Platform
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root]

CONNECT_TIMEOUT = 25.0
UDP_PORT = 7777
ROUNDS = 5
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
ALL_NODES_MAC = bytes.fromhex("333300000001")
V6_ON = ("net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.default.disable_ipv6=0")


@pytest.fixture(scope="module")
def world(netlab_required: None, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Lab, Platform, dict[str, Agent]]]:
    topo = Topology(sites=[Site("m", nat=NatType.NONE), Site("v", nat=NatType.NONE),
                           Site("t", nat=NatType.NONE)], public_hosts=["plat"])
    with platform_lab(topo, tmp_path_factory.mktemp("overlay6"), ("m1", "v1", "t1")) as w:
        agents = w[2]
        for agent in agents.values():  # a lab host without an IPv6 plan has IPv6 off
            agent.host.run(["sysctl", "-qw", *V6_ON], check=True)
        start_all(agents.values())
        m, v, t = agents["m1"], agents["v1"], agents["t1"]
        intents_both_ways(m, v)
        intents_both_ways(t, v)
        for a, b in ((m, v), (v, m), (t, v), (v, t)):
            wait_for(lambda a=a, b=b: a.connected(b.name), timeout=CONNECT_TIMEOUT,
                     interval=0.2, what=f"{a.name} connected to {b.name}")
        yield w


def _ip6(agent: Agent) -> str:
    got = agent.status()["overlay_ip6"]
    assert isinstance(got, str)
    return str(ipaddress.IPv6Address(got))


def _mac(host: Host) -> bytes:
    link = json.loads(host.run(["ip", "-j", "link", "show", "enclave0"], check=True).stdout)
    return bytes.fromhex(link[0]["address"].replace(":", ""))


def _neigh_mac(host: Host, ip: str) -> str | None:
    rows = json.loads(host.run(["ip", "-j", "-6", "neigh", "show", ip, "dev", "enclave0"],
                               check=True).stdout or "[]")
    return str(rows[0]["lladdr"]) if rows and "lladdr" in rows[0] else None


def _ping6(src: Host, dst: str, count: int = 3) -> int:
    """ICMPv6 echo over a raw socket in src's namespace (the kernel fills the checksum); the
    number of replies from dst."""
    sock = src.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    ident = os.getpid() & 0xFFFF
    got = 0
    try:
        for seq in range(1, count + 1):
            sock.sendto(struct.pack("!BBHHH", ICMPV6_ECHO_REQUEST, 0, 0, ident, seq) + b"overlay6",
                        (dst, 0))
            deadline = time.monotonic() + 2.0
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    data, addr = sock.recvfrom(2048)
                except TimeoutError:
                    break
                if (addr[0] == dst and data[0] == ICMPV6_ECHO_REPLY
                        and struct.unpack("!HH", data[4:8]) == (ident, seq)):
                    got += 1
                    break
    finally:
        sock.close()
    return got


def _ask(host: Host, server: str, name: str) -> list[str]:
    """The AAAA answers of `server` for `name`, asked from host's namespace over UDP."""
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    sock = host.socket(family, socket.SOCK_DGRAM)
    try:
        reply = dns.query.udp(dns.message.make_query(name, "AAAA"), server, timeout=3, sock=sock)
    finally:
        sock.close()
    return [rd.to_text() for rrset in reply.answer for rd in rrset]


def _dataplane(agent: Agent, peer: str) -> dict[str, Any]:
    row = next(p for p in agent.peers_cli() if p["name"] == peer)
    return dict(row.get("dataplane") or {})


def test_each_agent_holds_its_derived_overlay_ipv6_and_status_names_it(
        world: tuple[Lab, Platform, dict[str, Agent]]) -> None:
    _lab, _plat, agents = world
    seen = set()
    for agent in agents.values():
        ip6 = _ip6(agent)
        net = ipaddress.IPv6Network(f"{ip6}/64", strict=False)
        assert net.subnet_of(ipaddress.IPv6Network("fd00::/8"))
        assert ipaddress.IPv6Address(ip6).packed[12:] == ipaddress.IPv4Address(
            agent.overlay_ip).packed
        addrs = json.loads(agent.host.run(["ip", "-j", "-6", "addr", "show", "dev", "enclave0"],
                                          check=True).stdout)[0]["addr_info"]
        assert (ip6, 64) in [(a["local"], a["prefixlen"]) for a in addrs]
        seen.add(net)
        text = agent.run("status")
        assert text.returncode == 0 and f"overlay ip6  {ip6}" in text.stdout
    assert len(seen) == 1  # one org, one prefix


def test_agents_ping_each_others_overlay_ipv6_and_dns_answers_aaaa(
        world: tuple[Lab, Platform, dict[str, Agent]]) -> None:
    _lab, _plat, agents = world
    v, t = agents["v1"], agents["t1"]
    v6, t6 = _ip6(v), _ip6(t)
    assert _ping6(v.host, t6) >= 1
    assert _ping6(t.host, v6) >= 1
    assert _neigh_mac(v.host, t6) == ":".join(f"{b:02x}" for b in _mac(t.host))
    # T asks V's DNS, over IPv4 and over IPv6 (from T's overlay IPv6): V's and T's own names
    for server in (v.overlay_ip, v6):
        assert _ask(t.host, server, f"{v.name.lower()}.enclave.") == [v6]
        assert _ask(t.host, server, f"{t.name.lower()}.enclave.") == [t6]


def test_claiming_another_systems_overlay_ipv6_is_dropped_and_counted(
        world: tuple[Lab, Platform, dict[str, Agent]]) -> None:
    _lab, _plat, agents = world
    m, v, t = agents["m1"], agents["v1"], agents["t1"]
    m6, v6, t6 = _ip6(m), _ip6(v), _ip6(t)
    m_mac, v_mac, t_mac = _mac(m.host), _mac(v.host), _mac(t.host)
    t_mac_text = ":".join(f"{b:02x}" for b in t_mac)
    assert _ping6(v.host, t6) >= 1  # V knows T's MAC for T's overlay IPv6
    assert _neigh_mac(v.host, t6) == t_mac_text
    before = _dataplane(v, m.name).get("rx_ip_spoofed", 0)

    listener = v.host.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    listener.bind((v6, UDP_PORT))
    listener.settimeout(0.2)
    raw = m.host.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    raw.bind(("enclave0", 0))
    forged = [
        # UDP from T's overlay IPv6
        eth(v_mac, m_mac, ETH_IPV6, udp6(t6, v6, UDP_PORT, UDP_PORT, b"spoofed")),
        # unsolicited NA from M's own address: "T's overlay IPv6 is at M's MAC"
        eth(ALL_NODES_MAC, m_mac, ETH_IPV6,
            ipv6(m6, "ff02::1", socket.IPPROTO_ICMPV6,
                 icmp6_na(t6, nd_option(ND_OPT_TLLA, m_mac)))),
    ]
    honest = eth(v_mac, m_mac, ETH_IPV6, udp6(m6, v6, UDP_PORT, UDP_PORT, b"honest"))
    try:
        for _ in range(ROUNDS):
            for frame in (*forged, honest):
                raw.send(frame)
            time.sleep(0.2)
        got: list[tuple[bytes, str]] = []
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            try:
                data, addr = listener.recvfrom(2048)
            except TimeoutError:
                continue
            got.append((data, addr[0]))
    finally:
        listener.close()
        raw.close()

    assert (b"honest", m6) in got  # the same raw path carries M's own source
    assert not [g for g in got if g[0] == b"spoofed"], got
    assert _neigh_mac(v.host, t6) == t_mac_text

    def counted() -> dict[str, Any]:
        c = _dataplane(v, m.name)
        return c if c.get("rx_ip_spoofed", 0) - before >= 2 * ROUNDS else {}

    counters = wait_for(counted, timeout=5, interval=0.5, what="V's drop counters for M")
    assert counters["rx_spoofed"] == 0  # M used its own MAC: caught by the IPv6 rules
    assert _ping6(v.host, t6) >= 1
    assert _dataplane(v, t.name)["rx_ip_spoofed"] == 0
