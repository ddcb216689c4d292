"""The birthday hard side's sockets give a stranger nothing an unused port would not: they are
connect()ed to the easy side's public address, so the kernel hands them nothing from anyone
else, and a stranger's datagram meets the host's closed-port answer (ICMP port unreachable),
exactly as on a port nothing listens on. Read off the stranger's wire
(tests/netlab/cloaking/sniff.py).

    plat (platform, relay)                    evil (public stranger)
      |                                          |
    inet --- pr (port-restricted) --- pr1      inet --- sy (symmetric) --- sy1 (hard side)
                                                                      \\-- sy2 (LAN stranger)
"""

from __future__ import annotations

import random
import socket
import time
from typing import Any

import pytest

from enclave.netlab import Host, NatType, Site, Topology
from enclave.proto.wire import MSG_HANDSHAKE_INIT
from tests.netlab.cloaking.sniff import Sniffer
from tests.support.junk import init_shaped
from tests.support.lab import intents_both_ways, platform_lab, start_all
from tests.support.traffic import ping
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root]

DATA_PORT = 51820
UNUSED_PORT = 40999  # nothing listens here: the host's own closed-port answer
SETTLE = 1.5


def _peer(agent: Any, name: str) -> dict[str, Any]:
    return next((p for p in agent.peers() if p["name"] == name), {})


def _forwarder_ports(host: Host, peer_ip: str) -> list[int]:
    """Local ports of the UDP sockets connect()ed to peer_ip (the kept forwarders)."""
    out = host.run(["ss", "-Huan", "dst", peer_ip]).stdout.splitlines()
    ports = {int(line.split()[-2].rsplit(":", 1)[1]) for line in out if line.strip()}
    return sorted(ports - {DATA_PORT})


def _probe(src: Host, dst: str, ports: list[int], rng: random.Random) -> None:
    s = src.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for port in ports:
            for payload in (b"hello", init_shaped(rng, max_junk=1200)):
                s.sendto(payload, (dst, port))
            time.sleep(1.1)  # one port per second: the kernel's ICMP rate limit stays out of it
    finally:
        s.close()


def test_the_hard_sides_sockets_answer_a_stranger_as_an_unused_port(
        tmp_path: Any, netlab_required: None) -> None:
    topo = Topology(sites=[Site("pr", nat=NatType.PORT_RESTRICTED),
                           Site("sy", nat=NatType.SYMMETRIC, hosts=2)],
                    public_hosts=["plat", "evil"])
    with platform_lab(topo, tmp_path, ["pr1", "sy1"]) as (lab, _plat, agents):
        easy, hard = agents["pr1"], agents["sy1"]
        start_all(agents.values())
        intents_both_ways(easy, hard)
        wait_for(lambda: _peer(easy, hard.name).get("path") == "direct-udp"
                 and _peer(hard, easy.name).get("path") == "direct-udp",
                 timeout=40, interval=0.3, what="direct-udp on both sides")
        # the run ends a little after the path opens: then its kept forwarders are the only
        # ones left to probe
        wait_for(lambda: (_peer(hard, easy.name).get("birthday") or {}).get("outcome")
                 not in (None, "running"), timeout=30, interval=0.3, what="the run's end")
        run = _peer(hard, easy.name).get("birthday") or {}
        assert run.get("role") == "hard" and run.get("outcome") == "direct", run
        ports = _forwarder_ports(hard.host, str(easy.host.public_ip))
        if not ports:  # 1 run in 257: the data socket's own mapping won, no forwarder is kept
            pytest.skip("the data socket's own mapping won: no forwarder to probe")
        stranger, hard_ip = lab.host("sy2"), str(hard.host.ip)
        drops = hard.status()["node_drops"].get("init_bad_mac1", 0)
        rng = random.Random(3)
        with Sniffer(stranger, {hard_ip}) as on_forwarders:
            _probe(stranger, hard_ip, ports[:4], rng)
            time.sleep(SETTLE)
        with Sniffer(stranger, {hard_ip}) as on_unused:
            _probe(stranger, hard_ip, [UNUSED_PORT], rng)
            time.sleep(SETTLE)
        closed = {p[2] for p in on_unused.packets}
        assert closed == {"icmp type=3 code=3"}, on_unused.packets  # the control
        # the forwarders' ports: the same closed-port answer, nothing from the agent
        assert {p[2] for p in on_forwarders.packets} <= closed, on_forwarders.packets
        assert not [p for p in on_forwarders.packets if p[1] == "udp"]
        # the kernel kept the junk from the sockets: the Node never saw it
        assert hard.status()["node_drops"].get("init_bad_mac1", 0) == drops
        # from the internet the symmetric NAT lets only the easy side's address in
        evil = lab.public_host("evil")
        sy_public = str(hard.host.public_ip)
        with Sniffer(evil, {sy_public}) as from_outside:
            s = evil.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for port in range(1024, 65536, 257):
                s.sendto(bytes([MSG_HANDSHAKE_INIT, 0, 0, 0]) + bytes(64), (sy_public, port))
            s.close()
            time.sleep(SETTLE)
        assert from_outside.packets == [], from_outside.packets
        # the session still runs through its forwarder
        assert any(ping(easy.host, hard.overlay_ip, count=1, timeout=0.5) for _ in range(4))
