"""Cloaked from strangers (issue 12, items 2 and 3), with real `enclave up` agents and a real
platform: the data port gives a stranger nothing, introduced peers still meet over TCP when UDP
is dropped, and a flood of handshake-shaped packets from thousands of spoofed addresses and
ports starves no handshake.

    plat 198.18.0.11 (platform)     evil 198.18.0.12 (the stranger: probes, floods, spoofs)
          |                               |
    +-----+-------------------------------+------------ inet ------------------+
    |  a (port-restricted NAT)    b (no NAT: b1's data port faces the internet) |
    |  a1 198.19.1.11             b1 198.19.2.11                                |
    |  c (port-restricted NAT, nft drops all forwarded UDP)  c1 198.19.3.11     |
    +---------------------------------------------------------------------------+

The stranger reaches b1's port 51820 directly (no NAT in the way), so what it gets back is the
agent's doing: before this change the listener answered its SYN with a SYN-ACK.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from enclave.netlab import Host, Lab, NatType, Site, Topology
from enclave.proto.wire import MSG_HANDSHAKE_INIT, MSG_HANDSHAKE_INIT_V1
from tests.support.junk import init_shaped
from tests.support.lab import Agent, intents_both_ways, platform_lab, start_all
from tests.support.platform import Platform
from tests.support.traffic import ping
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root]

PORT = 51820  # the agents' data port (UDP and TCP)
CONNECT_TIMEOUT = 25.0
FLOOD_PACKETS = 20_000  # bounded: about 4 s at 5,000 per second
FLOOD_RATE = 5_000


@pytest.fixture(scope="module")
def world(netlab_required: None, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Lab, Platform, dict[str, Agent]]]:
    topo = Topology(
        sites=[Site("a", nat=NatType.PORT_RESTRICTED), Site("b", nat=NatType.NONE),
               Site("c", nat=NatType.PORT_RESTRICTED)],
        public_hosts=["plat", "evil"],
    )
    with platform_lab(topo, tmp_path_factory.mktemp("cloak"), ("a1", "b1", "c1")) as w:
        lab, _plat, agents = w
        lab.block_udp("c", True)
        start_all(agents.values())
        yield w


def _connected(a: Agent, b: Agent) -> tuple[dict[str, Any], dict[str, Any]]:
    pa = wait_for(lambda: a.connected(b.name), timeout=CONNECT_TIMEOUT, interval=0.2,
                  what=f"{a.name} connected to {b.name}")
    pb = wait_for(lambda: b.connected(a.name), timeout=CONNECT_TIMEOUT, interval=0.2,
                  what=f"{b.name} connected to {a.name}")
    assert pa is not None and pb is not None
    return pa, pb


def _syn_answer(src: Host, dst_ip: str, port: int = PORT, timeout: float = 3.0) -> str:
    """What a TCP connect from `src` gets: "accepted" (SYN-ACK), "refused" (RST) or "silence"."""
    s = src.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((dst_ip, port))
    except ConnectionRefusedError:
        return "refused"
    except (TimeoutError, OSError):
        return "silence"
    finally:
        s.close()
    return "accepted"


def _udp_probe_answers(src: Host, dst_ip: str, probes: list[bytes], wait: float = 2.0) -> int:
    s = src.socket(socket.AF_INET, socket.SOCK_DGRAM)
    got = 0
    try:
        for p in probes:
            s.sendto(p, (dst_ip, PORT))
        s.settimeout(wait)
        end = time.monotonic() + wait
        while time.monotonic() < end:
            try:
                s.recvfrom(65535)
                got += 1
            except TimeoutError:
                break
            except OSError:  # e.g. ICMP port unreachable reported on the socket
                got += 1
    finally:
        s.close()
    return got


def _ipv4_udp(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    """An IPv4 + UDP datagram with any source (IP_HDRINCL: the kernel fills the IP checksum
    and length; UDP checksum 0 = none)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip + udp


def _handshake_shaped(rng: random.Random) -> bytes:
    """What a stranger can send: old and new INIT type words, junk after them, sizes up to a
    real INIT's, half with a consistent certificate-length field (so the MAC is computed)."""
    return init_shaped(rng, kinds=(MSG_HANDSHAKE_INIT, MSG_HANDSHAKE_INIT_V1), max_junk=1400,
                       cert_lens=range(300, 1200))


def _spoofed_flood(evil: Host, dst_ip: str, stop: threading.Event) -> dict[str, int]:
    """FLOOD_PACKETS handshake-shaped datagrams to dst_ip:PORT at about FLOOD_RATE per second,
    each from a random source in 198.18.64.0/18 (16,384 addresses) and a random port."""
    rng = random.Random(12)
    raw = evil.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sources: set[str] = set()
    ports: set[int] = set()
    sent = 0
    try:
        t0 = time.monotonic()
        while sent < FLOOD_PACKETS and not stop.is_set():
            for _ in range(50):
                src = f"198.18.{rng.randrange(64, 128)}.{rng.randrange(1, 255)}"
                sport = rng.randrange(1024, 65536)
                raw.sendto(_ipv4_udp(src, sport, dst_ip, PORT, _handshake_shaped(rng)),
                           (dst_ip, 0))
                sources.add(src)
                ports.add(sport)
                sent += 1
            ahead = sent / FLOOD_RATE - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    finally:
        raw.close()
    return {"sent": sent, "sources": len(sources), "ports": len(ports)}


def test_a_stranger_gets_nothing_from_the_data_port(world: tuple[Lab, Platform, dict[str, Agent]]
                                                    ) -> None:
    lab, _plat, agents = world
    a1, b1 = agents["a1"], agents["b1"]
    intents_both_ways(a1, b1)
    _connected(a1, b1)
    evil, b_ip = lab.public_host("evil"), str(b1.host.ip)
    # TCP: the stranger's SYN is dropped in the kernel (no SYN-ACK, no RST) ...
    assert _syn_answer(evil, b_ip) == "silence"
    # ... while the introduced peer's address is admitted (positive control: the port is open)
    assert _syn_answer(a1.host, b_ip) == "accepted"
    # and the guard is b1's own table, keyed by its port
    listing = b1.host.run(["nft", "list", "table", "inet", f"enclave_guard_{PORT}"])
    assert listing.returncode == 0 and str(a1.host.public_ip) in listing.stdout
    # UDP: junk, an old-style and a new-style INIT-shaped datagram, a DATA-shaped one: silence
    rng = random.Random(5)
    probes = [b"\x00", b"hello", bytes([MSG_HANDSHAKE_INIT_V1, 0, 0, 0]) + bytes(1400),
              _handshake_shaped(rng), _handshake_shaped(rng), bytes([4, 0, 0, 0]) + bytes(60)]
    assert _udp_probe_answers(evil, b_ip, probes) == 0
    drops = b1.status()["node_drops"]
    assert drops.get("init_bad_mac1", 0) >= 1 and drops.get("init_legacy", 0) >= 1


def test_introduced_peers_meet_over_tcp_when_udp_is_dropped(
        world: tuple[Lab, Platform, dict[str, Agent]]) -> None:
    lab, _plat, agents = world
    b1, c1 = agents["b1"], agents["c1"]
    intents_both_ways(b1, c1)
    pb, pc = _connected(b1, c1)
    assert pb["path"] == "direct-tcp" and pc["path"] == "direct-tcp", (pb, pc)
    wait_for(lambda: ping(c1.host, b1.overlay_ip, count=1), timeout=5, what="first ping")
    assert ping(c1.host, b1.overlay_ip, count=5) == 5
    assert ping(b1.host, c1.overlay_ip, count=3) == 3
    # the guard admitted c's address and still refuses the stranger
    assert _syn_answer(lab.public_host("evil"), str(b1.host.ip)) == "silence"


def test_handshakes_succeed_under_a_spoofed_handshake_flood(
        world: tuple[Lab, Platform, dict[str, Agent]]) -> None:
    lab, _plat, agents = world
    a1, b1 = agents["a1"], agents["b1"]
    if a1.connected(b1.name) is not None:  # start from no session: the handshake runs in the flood
        a1.intent("remove", b1.name)
        b1.intent("remove", a1.name)
        wait_for(lambda: a1.peer(b1.name) is None and b1.peer(a1.name) is None, timeout=10,
                 interval=0.2, what="session gone before the flood")
    before = b1.status()["node_drops"].get("init_bad_mac1", 0)
    stop = threading.Event()
    result: dict[str, int] = {}
    flood = threading.Thread(
        target=lambda: result.update(_spoofed_flood(lab.public_host("evil"), str(b1.host.ip),
                                                    stop)))
    flood.start()
    try:
        time.sleep(0.5)  # the flood is on before the intents
        intents_both_ways(a1, b1)
        _connected(a1, b1)
        wait_for(lambda: ping(a1.host, b1.overlay_ip, count=1), timeout=5, what="first ping")
        assert ping(a1.host, b1.overlay_ip, count=5) == 5
        assert ping(b1.host, a1.overlay_ip, count=3) == 3
    finally:
        stop.set()
        flood.join(30)
    assert result["sources"] >= 1000 and result["ports"] >= 1000, result
    drops = b1.status()["node_drops"]
    # the flood reached b1's Node and was dropped at the MAC check: no rate-limit token spent
    # (so a genuine INIT never waited behind it), no cookie asked for, no certificate checked
    assert drops.get("init_bad_mac1", 0) - before >= result["sent"] // 4, (drops, result)
    assert drops.get("init_rate_limited", 0) == 0 and drops.get("init_invalid", 0) == 0, drops


def _guard(agent: Agent) -> str | None:
    """b1's guard table as `nft list` shows it, or None when there is none."""
    res = agent.host.run(["nft", "list", "table", "inet", f"enclave_guard_{PORT}"])
    return res.stdout if res.returncode == 0 else None


def test_guard_is_removed_on_exit_and_replaced_after_a_crash(
        world: tuple[Lab, Platform, dict[str, Agent]]) -> None:
    _lab, _plat, agents = world
    a1, b1 = agents["a1"], agents["b1"]
    if a1.connected(b1.name) is None:
        intents_both_ways(a1, b1)
        _connected(a1, b1)
    assert b1.proc is not None
    b1.proc.kill()  # a crash: nothing is cleaned up
    b1.proc.wait(10)
    b1.proc = None
    left = _guard(b1)
    assert left is not None and str(a1.host.public_ip) in left  # the table outlived the agent
    # a stale entry the next start must not keep
    b1.host.run(["nft", "add", "element", "inet", f"enclave_guard_{PORT}", "peers4",
                 "{ 198.18.77.77 }"], check=True)
    b1.up()
    _connected(a1, b1)
    table = _guard(b1)
    assert table is not None and str(a1.host.public_ip) in table
    assert "198.18.77.77" not in table
    assert b1.down() == 0  # a clean exit removes the table
    assert _guard(b1) is None
